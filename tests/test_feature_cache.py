"""The frozen-feature cache on disk: a hit on an identical rerun, a miss when the images or the weights
change, a damaged entry detected and rebuilt, the least recently used entries trimmed."""

import os

import keras
import numpy as np

from transferlab import feature_cache, models


def frozen_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.stack((4, 4, 3), [keras.layers.Conv2D(5, 3), keras.layers.GlobalAveragePooling2D()], name="f")
    model.trainable = False
    return model


def images(count=40, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(count, 4, 4, 3), dtype=np.uint8)


def batches(x, size=16):
    return (x[i:i + size].astype("float32") for i in range(0, len(x), size))


def test_an_identical_rerun_hits_and_reads_the_same_features(cache_dir):
    model, x = frozen_model(), images()
    first, status, seconds, info = feature_cache.cached(model, x, batches(x), "none")
    assert status == "miss" and seconds > 0 and first.shape == (40, 5) and first.dtype == np.float32
    assert info == {"inference_runtime": "keras"}
    np.testing.assert_allclose(first, model.predict(x.astype("float32"), verbose=0), rtol=1e-6)
    assert isinstance(first, np.memmap)  # on disk, not one more copy in memory

    def no_extraction():
        raise AssertionError("a hit must not run the frozen layers")
        yield

    again, status, _, _ = feature_cache.cached(frozen_model(), x, no_extraction(), "none")
    assert status == "hit"
    np.testing.assert_array_equal(again, first)
    assert sorted(os.listdir(cache_dir / "features")) == sorted(
        [f"{feature_cache.key(model, x, 'none')}.{suffix}" for suffix in ("json", "npy")])


def test_other_images_weights_or_preprocessing_miss(cache_dir):
    model, x = frozen_model(), images()
    feature_cache.cached(model, x, batches(x), "none")
    changed = x.copy()
    changed[3, 0, 0, 0] ^= 1  # one pixel
    assert feature_cache.cached(model, changed, batches(changed), "none")[1] == "miss"
    other = frozen_model(seed=1)
    assert feature_cache.cached(other, x, batches(x), "none")[1] == "miss"
    assert feature_cache.cached(model, x, batches(x / 2), "halved")[1] == "miss"
    assert len(os.listdir(cache_dir / "features")) == 8


def test_a_truncated_entry_is_discarded_with_a_warning_and_rebuilt(cache_dir, capsys):
    model, x = frozen_model(), images()
    good, _, _, _ = feature_cache.cached(model, x, batches(x), "none")
    good = np.array(good)
    entry = cache_dir / "features" / f"{feature_cache.key(model, x, 'none')}.npy"
    with open(entry, "r+b") as f:
        f.truncate(os.path.getsize(entry) // 2)
    rebuilt, status, _, _ = feature_cache.cached(model, x, batches(x), "none")
    assert status == "miss" and "warning: discarding a damaged feature cache entry" in capsys.readouterr().out
    np.testing.assert_array_equal(rebuilt, good)
    assert feature_cache.cached(model, x, batches(x), "none")[1] == "hit"


def test_the_least_recently_used_entries_go_when_the_cache_is_over_its_limit(cache_dir, monkeypatch):
    model = frozen_model()
    sets = [images(seed=s) for s in range(3)]
    for i, x in enumerate(sets):
        feature_cache.cached(model, x, batches(x), "none")
        os.utime(cache_dir / "features" / f"{feature_cache.key(model, x, 'none')}.json", (i, i))  # oldest first
    feature_cache.cached(model, sets[0], batches(sets[0]), "none")  # a hit makes set 0 the most recent
    size = os.path.getsize(cache_dir / "features" / f"{feature_cache.key(model, sets[0], 'none')}.npy")
    feature_cache.trim(2.5 * size)
    left = {name.split(".")[0] for name in os.listdir(cache_dir / "features")}
    assert left == {feature_cache.key(model, sets[0], "none"), feature_cache.key(model, sets[2], "none")}
