"""Where `demand predict` of a model of history spends its CPU: the streaming scorer
(pipeline/history_scoring.py) run on one file four times, each run in a process of its
own keeping one stage more than the run before: reading and checking the rows; then
featuring them; then forecasting them (ONNX Runtime, the answer's columns); then writing
the output. A stage's cost is its run's CPU seconds less the run's before it.

    python -m bench.predict_stages --input big.csv --output out.csv --model-dir models
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("reading", "featuring", "forecasting", "writing")


def run_stage(stage, input_path, output_path, model_dir):
    """{"wall": seconds, "cpu": CPU seconds} of the scorer on the file, its stages after `stage` left out."""
    from pipeline import history_scoring
    from pipeline.bundle import Bundle
    from pipeline.registry import Registry
    from pipeline.scoring import scoring_threads

    class NoOutput:  # the forecasts' table, dropped
        def __init__(self, path):
            pass

        write = finish = abandon = lambda self, *args: None

    kept = STAGES.index(stage)
    if kept < STAGES.index("writing"):
        history_scoring.Output = NoOutput
    if kept < STAGES.index("forecasting"):
        history_scoring._forecast_table = lambda chunk, bundle: (None, {"rows": len(chunk.X)})
    if kept < STAGES.index("featuring"):
        nothing = history_scoring.Featured(np.zeros((1, 1), np.float32), None, None, None)
        history_scoring._featured_chunk = lambda values, spec, history, statics: nothing
    threads = scoring_threads()  # as `demand predict` loads the model
    bundle = Bundle.load(Registry(Path(model_dir)), None, "auto", threads, concurrent=threads == 1)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    history_scoring.score_history_file(input_path, output_path, bundle)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall": time.perf_counter() - started, "cpu": cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.input, args.output, args.model_dir)))
        return
    previous = 0.0
    print("| stages kept | wall s | CPU s | the stage's CPU s |\n|---|---|---|---|")
    for stage in STAGES:
        command = [sys.executable, "-m", "bench.predict_stages", "--stage", stage]
        command += ["--input", args.input, "--output", args.output, "--model-dir", args.model_dir]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.splitlines()[-1])
        print(f"| to {stage} | {figures['wall']:.2f} | {figures['cpu']:.2f} | {figures['cpu'] - previous:.2f} |")
        previous = figures["cpu"]


if __name__ == "__main__":
    main()
