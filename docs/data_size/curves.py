"""The training curves of the sweep's full-data runs, read from their TensorBoard event files into one small JSON.

    python docs/data_size/curves.py --log_dir TB_log

writes `docs/data_size/curves.json`: for each run of `docs/data_size/results.json` trained on all the photos
(fraction 1), the steps and values of `val/accuracy`, `train/loss` and `train/lr`. Notebook 6 draws its curves
from the event files when the runs are on the machine (after `python -m vitlab.sweep`), and from this file when
they are not, so that it also stands alone in a fresh clone or on Colab.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vitlab.files import atomic_write
from vitlab.visualize import read_scalars

HERE = Path(__file__).resolve().parent
TAGS = ("val/accuracy", "train/loss", "train/lr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log_dir", default="TB_log", help="TensorBoard root holding the sweep's runs")
    parser.add_argument("--results", default=str(HERE / "results.json"), help="the sweep's table")
    parser.add_argument("--out", default=str(HERE / "curves.json"), help="where to write the curves")
    args = parser.parse_args(argv)
    rows = [row for row in json.loads(Path(args.results).read_text()) if row["fraction"] == 1.0]
    curves = {}
    for row in rows:
        scalars = read_scalars(Path(args.log_dir) / row["run"])
        curves[row["run"]] = {
            tag: {"steps": scalars[tag][0].tolist(), "values": [round(value, 6) for value in scalars[tag][2].tolist()]}
            for tag in TAGS
            if tag in scalars
        }
    runs = [f"  {json.dumps(run)}: {json.dumps(tags)}" for run, tags in curves.items()]  # one line a run
    text = "{\n" + ",\n".join(runs) + "\n}\n"
    with atomic_write(args.out, "w") as file:
        file.write(text)
    print(f"{args.out}: the curves of {len(curves)} runs ({', '.join(curves)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
