"""HDMAP data: from folders on disk to the batches a model sees.

layout.py       folder scan -> sample tables (domains, splits, labels, subgroups, train/validation split,
                the manifest reference)
images.py       decoding with amplitude kept, resizing, and the pipeline that normalises and resizes
normalization.py  intensity normalisation and the training-image statistics it uses
dataset.py      one split as an in-memory anomalib dataset (items, batches, cache budget)
datamodule.py   builds the datasets and loaders of one run (build_datamodule: from the `data` config)
synthetic.py    the built-in deterministic HDMAP-like dataset
faults.py       line faults on decoded images (synthetic dataset, synthetic-fault validation)
cutpaste.py     CutPaste faults on tensor batches, for training DRAEM-CutPaste and DRAEM-SevNet
"""
