"""Ray job: ``factory synthesize``, a synthetic dataset as WebDataset shards (Ray Data).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/synthesize.py --config configs/quickstart.yaml [key=value ...]
"""

from _stage import run_stage

if __name__ == "__main__":
    run_stage("synthesize")
