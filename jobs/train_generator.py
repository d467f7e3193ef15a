"""Ray job: ``factory train-generator``, the CemiFace generator trained under Ray Train.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train_generator.py --config configs/faceworld-generator.yaml [key=value ...]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("train-generator")
