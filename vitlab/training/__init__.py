"""The parts of the trainer; `vitlab/train.py` puts them together into `train()` and its loop.

    devices.py      the device, the torchrun processes, the precision, the seeds
    inputs.py       the checkpoint and data a run reads: every missing one named at once, before anything is written
    build.py        the config check, then the model, the data, the optimiser and the schedule
    setup.py        `setup_run`: all of those, once and in order, into a `Run` (resume state included)
    batches.py      the seeded stream of training micro-batches (DataLoader or on-device augmentation)
    state.py        what a checkpoint holds of a run, resuming from one
    logs.py         TensorBoard: config, sample inputs, hyperparameters
    flags.py        the flags of `python -m vitlab.train`

This file imports nothing, so importing one part does not pull in the others.
"""
