"""Strata's Flower 1.42 app for the side-by-side benchmark (scripts/bench-flower.sh): FedAvg of
PFLlib's FedAvgCNN on a Fashion-MNIST split file, run with Flower's Ray simulation by
bench/flower/run.py."""
