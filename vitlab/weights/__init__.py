"""Weight files: everything that reads, writes or fetches them, apart from the model itself.

    errors.py       CheckpointError, the one error type of a checkpoint that cannot be loaded
    fetch.py        the known pre-trained checkpoints, their addresses, `download`, `fetch_if_missing`
    npz.py          Google's `.npz` layout, in (`read_npz`, `npz_to_state_dict`) and out (`save_npz`)
    convert.py      key maps between vitlab's state dicts and timm's or torchvision's
    state_dicts.py  PyTorch weight files (.pth, .bin, .safetensors) read safely, in any of those names
    load.py         `load_pretrained` (any of the above into a model) and `apply_state_dict`
    checkpoint.py   a training run's checkpoints: save, load, rebuild the model

The public names are importable from `vitlab` (`vitlab.load_pretrained`, `vitlab.save_npz`,
`vitlab.download`); this file imports nothing, so importing one of its modules stays cheap.
"""
