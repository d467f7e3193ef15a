"""Ray job: ``factory evaluate``, a recognizer checkpoint verified on .bin benchmarks.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/evaluate.py --config configs/quickstart.yaml [key=value ...]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("evaluate")
