"""Ray job: ``factory analyze DIR``, statistics and the privacy check of a dataset.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/analyze.py runs/quickstart/synthetic --config configs/quickstart.yaml
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("analyze")
