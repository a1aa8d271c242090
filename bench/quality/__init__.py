"""Quality experiments, apart from the speed benchmarks in bench/: how good hitgan's images get
for a budget of CPU minutes, against a plain DCGAN baseline.

- ``python -m bench.quality``: the suite, hitgan and the baseline side by side on several
  datasets; FID, their ratio, precision and recall per set (``__main__.py``);
- ``python -m bench.quality.compare``: one dataset, with FID snapshots along the way and
  training variants;
- ``python -m bench.quality.data``: builds the suite's datasets offline;
- ``python -m bench.quality.conditional``: trains a class-conditional run and scores it with a
  classifier (``hitgan.metrics.classifier``);
- ``bench/quality/baseline.py``: the DCGAN baseline.
"""
