"""Ray job: ``factory generator-progress``, m-compliance of every checkpoint of a generator run.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/generator_progress.py --config configs/faceworld-generator-stage3.yaml [DIR]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("generator-progress")
