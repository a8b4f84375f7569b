"""What a resumed run continues with: its own saved config, with only the changes that are safe."""

from __future__ import annotations

from vitlab.configs.checks import ConfigError
from vitlab.configs.run import VITConfig

# What a resumed run may change: how long it runs, how often it evaluates and logs, and where and how it
# computes (none of these alters the numbers of the steps already taken). Every other field is the run's.
CHANGEABLE_ON_RESUME = (
    "num_steps", "eval_every", "log_every", "eval_batch_size", "num_workers", "progress", "TB_log", "device",
    "compile", "data_dir", "pretrained_dir", "save_dir", "log_dir", "local_rank", "ddp_timeout", "resume",
)  # fmt: skip
IDENTITY_FIELDS = ("name", "record_algo", "test_cycles")  # they name the run's folders


def resume_config(saved: dict, given: VITConfig) -> tuple[VITConfig, dict]:
    """The config a resumed run continues with: `saved` (the run's own), with the changes that are safe.

    The fields the user set (`given.fields_set`: on the command line, in a config file or in Python; not a
    recipe's own values nor derived ones such as a scaled warm-up) that differ from the saved ones are the
    changes asked for. Returns (config, {field: (saved value,
    new value)} for each change). Changing a field that is not safe to change is an error naming it.
    """
    saved_cfg = VITConfig.from_dict({k: v for k, v in saved.items() if k != "resume"})
    defaults = VITConfig().to_dict()
    new, requested = given.to_dict(), given.fields_set
    if new["model_overrides"].items() <= saved_cfg.model_overrides.items():
        new["model_overrides"] = saved_cfg.model_overrides  # the run added the model's normalisation to them
    changes = {
        k: (saved[k] if k in saved else defaults[k], new[k])
        for k in sorted(requested - {*IDENTITY_FIELDS, "resume"})
        if new[k] != saved_cfg.to_dict()[k]
    }
    refused = {k: v for k, v in changes.items() if k not in CHANGEABLE_ON_RESUME}
    if refused:
        listed = "; ".join(f"{k}: the run has {old!r}, given {value!r}" for k, (old, value) in refused.items())
        raise ConfigError(
            f"a resumed run keeps its settings, and {', '.join(refused)} cannot change ({listed}). Resume without "
            f"those flags, or start a new run with another --name. Changeable: {', '.join(CHANGEABLE_ON_RESUME[:-1])}"
        )
    cfg = saved_cfg.replace(**{k: value for k, (_, value) in changes.items()}, resume=given.resume)
    return cfg, changes
