"""Ray job: ``factory sweep``, Ray Tune trials of recognizers on a synthesised pool (MLflow).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/sweep.py --config configs/sweep/faceworld.yaml [key=value ...]

On a multi-node cluster set MLFLOW_TRACKING_URI (or runtime.mlflow_tracking_uri) to the
tracking server, and sweep.storage / workdir to shared storage.
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("sweep")
