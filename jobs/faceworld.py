"""Ray job: ``factory faceworld``, the face world's RecordIO training set and .bin benchmarks.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/faceworld.py --config configs/smoke.yaml [key=value ...]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("faceworld")
