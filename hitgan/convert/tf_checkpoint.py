"""Read a checkpoint of the official HiT-GAN trainer into reference-layout variables.

The official trainer saves ``tf.train.Checkpoint(generator=..., discriminator=...,
[ema_generator=...,] generator_optim=..., discriminator_optim=..., global_step=...)``
(trainers/base_trainer.py, trainers/gan_trainer.py). Its keys follow Keras attribute paths, but
Keras Sequential models name their layers ``layer_with_weights-N`` (N counts only the layers that
hold weights). The reference layout (``tests/data/README.md``) uses the Sequential's
layer index instead: ``mlp_block/2`` is the Dense after the Dropout, ``layer_with_weights-1`` in
the checkpoint. The checkpoint's object graph links each ``layer_with_weights-N`` to its
``layer-I`` alias, so the index comes from there.

This module needs TensorFlow but not torch, so it also runs as a script in a TF-only env::

    python hitgan/convert/tf_checkpoint.py MODEL_DIR_OR_CKPT out.npz [--ema]
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import numpy as np

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_LAYER = re.compile(r"layer-(\d+)")
_WEIGHTED = re.compile(r"layer_with_weights-\d+")


def _import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("reading TF checkpoints needs TensorFlow: pip install 'hitgan[tf]'"
                          ) from e
    return tf


def _resolve(tf: Any, path: str) -> str:
    """A checkpoint prefix: ``path`` itself, or the latest checkpoint of a directory."""
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise ValueError(f"{path}: no TF checkpoint in this directory (no 'checkpoint' "
                             "file); give the model_dir of an official run or a ckpt-N prefix")
        return prefix
    if not os.path.exists(path + ".index"):
        raise ValueError(f"{path}: not a TF checkpoint ({path}.index missing); give a "
                         "directory or a checkpoint prefix such as model_dir/ckpt-1000")
    return path


def _object_graph(reader: Any, prefix: str) -> Any:
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    if not reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"):
        raise ValueError(f"{prefix}: not an object-based checkpoint (tf.train.Checkpoint); "
                         "TF1 Saver checkpoints are not supported")
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return graph


def _rename(graph: Any, parts: list[str], prefix: str) -> list[str]:
    """Follow ``parts`` from the root; ``layer-I``/``layer_with_weights-N`` become ``I``."""
    node, out = 0, []
    for name in parts:
        children = {c.local_name: c.node_id for c in graph.nodes[node].children}
        if name not in children:
            raise ValueError(f"{prefix}: key component {name!r} of {'/'.join(parts)} is not "
                             "in the checkpoint's object graph")
        child = children[name]
        if _WEIGHTED.fullmatch(name):
            index = [m.group(1) for other, i in children.items()
                     if i == child and (m := _LAYER.fullmatch(other))]
            if len(index) != 1:
                raise ValueError(f"{prefix}: {'/'.join(parts)}: no layer-I alias of {name}, "
                                 "cannot recover the Sequential layer index")
            name = index[0]
        elif m := _LAYER.fullmatch(name):
            name = m.group(1)
        out.append(name)
        node = child
    return out


def read_tf_checkpoint(path: str, ema: bool = False) -> dict[str, np.ndarray]:
    """Generator and discriminator variables of an official checkpoint, reference-named.

    ``path`` is a model_dir (its latest checkpoint is read) or a checkpoint prefix. With ``ema``
    the generator comes from ``ema_generator`` (runs with ``use_ema_model``); it is still named
    ``generator/...``. Optimizer slots, step counters and other objects are left out.
    """
    tf = _import_tf()
    prefix = _resolve(tf, path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"{prefix}: cannot read as a TF checkpoint ({e})") from e
    graph = _object_graph(reader, prefix)
    roots = {c.local_name for c in graph.nodes[0].children}
    sources = {"ema_generator" if ema else "generator": "generator",
               "discriminator": "discriminator"}
    if ema and "ema_generator" not in roots:
        raise ValueError(f"{prefix}: has no ema_generator (the run had use_ema_model=False); "
                         "read it without ema")
    if not roots & set(sources):
        raise ValueError(f"{prefix}: holds neither a generator nor a discriminator (top-level "
                         f"objects: {sorted(roots)}); is it an official HiT-GAN checkpoint?")
    variables: dict[str, np.ndarray] = {}
    for key in sorted(reader.get_variable_to_shape_map()):
        parts = key.split("/")
        if not key.endswith(VALUE_SUFFIX) or parts[0] not in sources or ".OPTIMIZER_SLOT" in key:
            continue
        name = "/".join([sources[parts[0]], *_rename(graph, parts[:-2], prefix)[1:]])
        variables[name] = np.asarray(reader.get_tensor(key))
    return variables


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="official TF checkpoint -> npz of reference-named "
                                "variables (input of `hitgan convert-official --preset ...`)")
    p.add_argument("checkpoint", help="model_dir of an official run, or a ckpt-N prefix")
    p.add_argument("out", help="npz to write")
    p.add_argument("--ema", action="store_true", help="take the EMA generator")
    args = p.parse_args(argv)
    variables = read_tf_checkpoint(args.checkpoint, ema=args.ema)
    np.savez(args.out, **variables)
    print(f"wrote {len(variables)} variables to {args.out}")


if __name__ == "__main__":
    main()
