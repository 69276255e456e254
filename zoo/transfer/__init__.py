"""The transfer-learning lab: datasets, head strategies, a training loop with callbacks, stored runs."""
