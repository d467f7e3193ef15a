"""Ray job: ``factory compare``, a sweep's trials by AVG and the accuracy-vs-m PNG, from MLflow.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/compare.py --experiment faceworld-sweep --out runs/compare
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("compare")
