"""Ray job: ``factory train-recognizer``, a recognizer trained under Ray Train.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train_recognizer.py --config configs/quickstart.yaml [key=value ...]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("train-recognizer")
