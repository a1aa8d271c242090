"""read_tf_checkpoint maps official-trainer checkpoint keys to the reference layout.

Needs TensorFlow with tf-keras (the Keras 2 API of the official code); skipped without them. The
checkpoint is built here from small Keras objects nested as the official models are, not from the
official code.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from hitgan.convert.tf_checkpoint import read_tf_checkpoint  # noqa: E402


class MLP(keras.layers.Layer):
    """As the official layers.MLP: norm_layer + Sequential [Dense, Dropout, Dense, Dropout]."""

    def build(self, input_shape):
        dim = input_shape[-1]
        self.norm_layer = keras.layers.BatchNormalization()
        self.mlp_block = keras.Sequential([
            keras.layers.Dense(2 * dim, activation="gelu"), keras.layers.Dropout(0.0),
            keras.layers.Dense(dim), keras.layers.Dropout(0.0)])

    def call(self, x, training=None):
        return x + self.mlp_block(self.norm_layer(x, training=training), training=training)


class Generator(keras.Model):
    """dense_layer / embedding_layer Sequentials, lists of Sequentials, a list holding None."""

    def __init__(self):
        super().__init__()
        self.dense_layer = keras.Sequential([keras.layers.Dense(16),
                                             keras.layers.Reshape((2, 2, 4))])
        self.embedding_layer = keras.Sequential([
            keras.layers.Dense(8), keras.layers.Reshape((1, 2, 4)),
            keras.layers.BatchNormalization()])
        self.blocks = [keras.Sequential([MLP(), MLP()]), keras.Sequential([MLP()])]
        self.to_rgb_layers = [None, keras.Sequential([keras.layers.Dense(3)])]

    def call(self, z, training=None):
        x = self.dense_layer(z)
        x = x + tf.reduce_mean(self.embedding_layer(z, training=training))
        for block in self.blocks:
            x = block(x, training=training)
        return self.to_rgb_layers[1](x)


class Block(keras.layers.Layer):
    """As the official discriminator Block: skip_layers and conv_layers Sequentials."""

    def build(self, input_shape):
        self.skip_layers = keras.Sequential([
            keras.layers.AveragePooling2D(), keras.layers.Conv2D(4, 1, use_bias=False)])
        self.conv_layers = keras.Sequential([
            keras.layers.Conv2D(4, 3, padding="same"), keras.layers.LeakyReLU(0.2),
            keras.layers.AveragePooling2D(), keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.LeakyReLU(0.2)])

    def call(self, x):
        return self.conv_layers(x) + self.skip_layers(x)


class Discriminator(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv_blocks = keras.Sequential([
            keras.layers.Conv2D(4, 3, padding="same"), keras.layers.LeakyReLU(0.2), Block()])
        self.final_layers = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1)])

    def call(self, x):
        return self.final_layers(self.conv_blocks(x))


def _generator_layers(g: Generator) -> dict:
    """Reference path -> Keras layer holding the weights, written out by hand."""
    layers = {"dense_layer/0": g.dense_layer.layers[0],
              "embedding_layer/0": g.embedding_layer.layers[0],
              "embedding_layer/2": g.embedding_layer.layers[2],
              "to_rgb_layers/1/0": g.to_rgb_layers[1].layers[0]}
    for i, block in enumerate(g.blocks):
        for j, mlp in enumerate(block.layers):
            layers[f"blocks/{i}/{j}/norm_layer"] = mlp.norm_layer
            layers[f"blocks/{i}/{j}/mlp_block/0"] = mlp.mlp_block.layers[0]
            layers[f"blocks/{i}/{j}/mlp_block/2"] = mlp.mlp_block.layers[2]
    return layers


def _discriminator_layers(d: Discriminator) -> dict:
    block = d.conv_blocks.layers[2]
    return {"conv_blocks/0": d.conv_blocks.layers[0],
            "conv_blocks/2/skip_layers/1": block.skip_layers.layers[1],
            "conv_blocks/2/conv_layers/0": block.conv_layers.layers[0],
            "conv_blocks/2/conv_layers/3": block.conv_layers.layers[3],
            "final_layers/1": d.final_layers.layers[1]}


def _values(prefix: str, layers: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}/{path}/{w.name.split('/')[-1].split(':')[0]}": w.numpy()
            for path, layer in layers.items() for w in layer.weights}


@pytest.fixture(scope="module", params=["keras_optimizer", "legacy_optimizer"])
def checkpoint(request, tmp_path_factory):
    """A run saved as the official trainer does, after one optimizer step."""
    rng = np.random.default_rng(0)
    z = tf.constant(rng.standard_normal((2, 4), np.float32))
    gen, ema, disc = Generator(), Generator(), Discriminator()
    optimizers = keras.optimizers.legacy if request.param == "legacy_optimizer" \
        else keras.optimizers
    g_opt, d_opt = optimizers.Adam(1e-3), optimizers.Adam(1e-3)
    with tf.GradientTape(persistent=True) as tape:
        images = gen(z, training=True)
        loss = tf.reduce_mean(disc(images))
    for opt, model in ((g_opt, gen), (d_opt, disc)):
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    ema(z)
    for model in (gen, ema, disc):  # distinct values everywhere, so a wrong mapping shows
        for v in model.variables:
            v.assign(rng.standard_normal(v.shape).astype(np.float32))
    ckpt = tf.train.Checkpoint(generator=gen, discriminator=disc, ema_generator=ema,
                               generator_optim=g_opt, discriminator_optim=d_opt,
                               global_step=g_opt.iterations)
    model_dir = tmp_path_factory.mktemp(request.param)
    tf.train.CheckpointManager(ckpt, str(model_dir), max_to_keep=2).save(g_opt.iterations)
    return model_dir, gen, ema, disc


def test_names_and_values(checkpoint):
    model_dir, gen, _, disc = checkpoint
    got = read_tf_checkpoint(str(model_dir))
    expected = {**_values("generator", _generator_layers(gen)),
                **_values("discriminator", _discriminator_layers(disc))}
    assert len(expected) == 43  # 34 in G (24 in its blocks), 9 in D (skip conv has no bias)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_ema_generator(checkpoint):
    model_dir, gen, ema, _ = checkpoint
    got = read_tf_checkpoint(str(tf.train.latest_checkpoint(str(model_dir))), ema=True)
    for name, value in _values("generator", _generator_layers(ema)).items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert not np.array_equal(got["generator/dense_layer/0/kernel"],
                              gen.dense_layer.layers[0].kernel.numpy())


def test_errors(checkpoint, tmp_path):
    _, gen, _, _ = checkpoint
    with pytest.raises(ValueError, match="no TF checkpoint"):
        read_tf_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="not a TF checkpoint"):
        read_tf_checkpoint(str(tmp_path / "ckpt-7"))
    tf.train.Checkpoint(generator=gen).save(str(tmp_path / "no_ema" / "ckpt"))
    with pytest.raises(ValueError, match="has no ema_generator"):
        read_tf_checkpoint(str(tmp_path / "no_ema"), ema=True)
