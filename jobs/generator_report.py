"""Ray job: ``factory generator-report``, m-compliance and the CemiFace grid of a checkpoint.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/generator_report.py --config configs/quickstart.yaml [key=value ...]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("generator-report")
