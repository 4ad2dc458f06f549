"""The folder recipe's measured choice of input size and head (transferlab/choice.py), and a head that converges."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from transferlab import backbones, choice, feature_cache, images, litert, phases, pipelines


def test_photos_at_least_the_native_size_are_shown_at_it_and_smaller_ones_try_three_sizes():
    assert choice.candidate_sizes("MobileNetV2", 375) == (
        (224,), "photos of 375 px are at least MobileNetV2's native 224: that size")
    assert choice.candidate_sizes("MobileNetV2", 32) == (
        (224, 160, 96), "photos of 32 px, below MobileNetV2's native 224: sizes measured")
    # Another family's shares of its own native size, rounded to 8 pixels, the native size itself kept (first).
    assert choice.candidate_sizes("InceptionV3", 100)[0] == (299, 216, 128)


def test_the_photos_typical_size_is_the_median_shorter_side_from_the_headers(tmp_path):
    paths = []
    for i, (w, h) in enumerate([(32, 32), (640, 48), (50, 400), (100, 90), (28, 28)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (w, h)).save(paths[-1])
    assert choice.photo_side(paths) == 48  # shorter sides 32, 48, 50, 90, 28


def test_the_sample_is_a_function_of_the_file_names_shared_by_the_classes_and_dealt_into_folds():
    paths = np.array([f"/a/{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(300)])
    labels = np.repeat([0, 1], 300)
    picked, fold = choice.sample(paths, labels, images=300, folds=3)
    assert len(set(picked)) == 300 and np.bincount(labels[picked]).tolist() == [150, 150]
    # Every fold holds a third of each class.
    assert [np.bincount(labels[picked][fold == k]).tolist() for k in range(3)] == [[50, 50]] * 3
    # The same files in another folder and order give the same sample and folds: the hash reads the class folder
    # and the name only.
    moved = np.array([p.replace("/a/", "/elsewhere/") for p in paths])
    order = np.random.default_rng(0).permutation(600)
    picked2, fold2 = choice.sample(moved[order], labels[order], images=300, folds=3)
    assert [sorted(moved[order][picked2][fold2 == k]) for k in range(3)] == [sorted(moved[picked][fold == k])
                                                                             for k in range(3)]
    # A small class still has a photo in every fold.
    small, small_fold = choice.sample(np.array([f"/a/x/{i}.jpg" for i in range(3)] + ["/a/y/1.jpg", "/a/y/2.jpg",
                                                                                       "/a/y/3.jpg"]),
                                      np.array([0, 0, 0, 1, 1, 1]), folds=3)
    assert sorted(small_fold.tolist()) == [0, 0, 1, 1, 2, 2] and len(small) == 6


def entry(size, head, accuracy):
    return {"image_size": size, "head": head, "held_out_accuracy": accuracy, "held_out_loss": 0.5}


def test_a_smaller_size_wins_only_by_more_than_a_standard_error_and_the_earlier_head_wins_ties():
    # Over 600 photos the native size's 0.80 has a standard error of 0.0163: 160 px must score above 0.8163.
    tried = [entry(224, [], 0.80), entry(160, [], 0.815), entry(96, [], 0.70)]
    assert choice.best(tried, 600) is tried[0]
    tried = [entry(224, [], 0.80), entry(160, [], 0.82), entry(96, [], 0.83), entry(96, [256], 0.83)]
    assert choice.best(tried, 600) is tried[2]  # the best size's heads tie: the earlier one, linear
    tried = [entry(224, [], 0.80), entry(160, [], 0.82), entry(160, [256], 0.86)]
    assert choice.best(tried, 600) is tried[2]
    assert choice.best([entry(224, [], 0.97), entry(224, [256], 0.97)], 600)["head"] == []
    # A hidden layer must beat the linear head by a standard error too: 0.9883's is 0.0044 over 600 photos.
    assert choice.best([entry(224, [], 0.9883), entry(224, [256], 0.9900)], 600)["head"] == []
    assert choice.best([entry(224, [], 0.9883), entry(224, [256], 0.9930)], 600)["head"] == [256]


@pytest.mark.parametrize("classes", [2, 3])
def test_each_candidate_learns_from_its_own_sizes_features_only(classes):
    # Two sizes side by side: the first size's features are noise, the second's give the class away. Trained
    # together, each candidate must score what its own features allow.
    rng = np.random.default_rng(0)
    labels = np.arange(150) % classes
    fold = np.arange(150) // 50  # every class in every fold
    noise = rng.normal(size=(150, 12)).astype(np.float32)
    telling = (np.eye(12)[labels] * 3 + rng.normal(scale=0.1, size=(150, 12))).astype(np.float32)
    settings = choice.Settings((64, 32), ((), (16,)), epochs=30, learning_rate=1e-2, batch_size=16)
    (noise_linear, noise_hidden, telling_linear, telling_hidden) = choice.score(
        [noise, telling], labels, fold, settings.heads, classes, settings)
    assert telling_linear[0] == telling_hidden[0] == 1.0
    assert noise_linear[0] < 0.75 and noise_hidden[0] < 0.75
    assert telling_linear[1] < 0.1 < noise_linear[1]


def test_every_photo_is_scored_by_the_candidate_that_never_saw_it():
    # One feature of its own a photo and random labels: a linear head learns the photos it trains on by heart and
    # knows nothing of the others, so held-out accuracy is chance (scored by the candidates that trained on them,
    # it would be 100%).
    labels = np.random.default_rng(1).integers(0, 2, 90)
    settings = choice.Settings((32,), ((),), epochs=100, learning_rate=0.1, batch_size=10)
    ((accuracy, loss),) = choice.score([np.eye(90, dtype=np.float32)], labels, np.arange(90) % 3, ((),), 2, settings)
    assert accuracy < 0.7 and loss > 0.5


@pytest.mark.parametrize("epochs, steps, samples, batch, passes", [
    (10, 1500, 1600, 32, 3),   # 50 steps an epoch: 3 passes make 1,500 steps in 10 epochs
    (10, 1500, 2000, 32, 3),   # 63 steps an epoch: 630 a pass, so 3
    (5, 1500, 150, 32, 60),    # the short run on a small folder: 5 steps an epoch
    (10, 0, 150, 32, 1),       # HEAD_STEPS 0: EPOCHS exactly
    (10, 100, 1600, 32, 1),    # already more steps than asked
])
def test_a_head_on_cached_features_passes_over_them_often_enough_to_take_its_steps(epochs, steps, samples, batch,
                                                                                   passes):
    assert phases.head_passes(epochs, steps, samples, batch) == passes


def test_an_epoch_of_several_passes_sees_every_example_that_often_in_a_fresh_order_each_time():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    batches = list(pipelines.epoch_batches(x, y, 4, seed=3, passes=3))
    seen = np.concatenate([b[1].numpy() for b in batches])
    assert len(batches) == 8 and np.bincount(seen).tolist() == [1 * 3] * 10  # ceil(30 / 4) batches
    assert not np.array_equal(seen[:10], seen[10:20])
    # Epoch 1 is epoch 1 whether the pipeline started there (a resumed run) or went through epoch 0 first.
    stream = pipelines.epoch_batches(x, y, 4, seed=3, passes=3)
    second = [np.concatenate([b[1].numpy() for b in stream]) for _ in range(2)][1]
    resumed = np.concatenate([b[1].numpy() for b in pipelines.epoch_batches(x, y, 4, seed=3, first_epoch=1, passes=3)])
    assert np.array_equal(second, resumed) and not np.array_equal(second, seen)
    # One pass gives the order it always gave: runs without HEAD_STEPS train as before.
    one = np.concatenate([b[1].numpy() for b in pipelines.epoch_batches(x, y, 4, seed=3)])
    again = np.concatenate([b[1].numpy() for b in pipelines.epoch_batches(x, y, 4, seed=3, passes=1)])
    assert np.array_equal(one, again) and sorted(one) == list(range(10))


def test_the_size_free_twin_gives_the_fixed_backbones_features_at_each_size():
    for size in (32, 48):
        fixed, _ = backbones.load("MobileNetV2", size, None)
        twin = backbones.size_free("MobileNetV2", fixed)
        assert twin.input_shape == (None, None, None, 3)
        x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        pooled = keras.layers.GlobalAveragePooling2D
        expected = backbones.feature_extractor(fixed, pooled()).predict_on_batch(x)
        np.testing.assert_allclose(backbones.feature_extractor(twin, pooled()).predict_on_batch(x), expected,
                                   atol=1e-5)


def test_the_run_shares_the_twins_litert_conversion_and_gets_the_fixed_models_features(private_litert):
    fixed, _ = backbones.load("MobileNetV2", 32, None)
    pooled = keras.layers.GlobalAveragePooling2D
    features = backbones.feature_extractor(fixed, pooled())
    inference = litert.Inference.choose("litert")
    inference.share(features, backbones.feature_extractor(backbones.size_free("MobileNetV2", fixed), pooled()))
    run_batch, info = inference.batch_function(features)
    assert info == {"inference_runtime": "litert", "litert_conversion": "shared"}
    assert len(inference.made) == 2 and len(list(private_litert.glob("*.tflite"))) == 1  # one conversion
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(run_batch(x), features.predict_on_batch(x), atol=1e-4)



def test_the_runs_pass_takes_the_choices_sample_rows_and_gives_what_a_whole_pass_gives(tmp_path, cache_dir,
                                                                                        private_litert):
    x, y = make_photos(tmp_path / "photos", 32)
    fixed, _ = backbones.load("MobileNetV2", 32, None)
    pooled = keras.layers.GlobalAveragePooling2D
    features = backbones.feature_extractor(fixed, pooled())
    twin = backbones.feature_extractor(backbones.size_free("MobileNetV2", fixed), pooled())
    inference = litert.Inference.choose("litert")
    inference.share(features, twin)
    feed = backbones.feed("MobileNetV2", batch_size=8, seed=0)
    picked = np.array([1, 5, 6, 20, 23])  # the choice's sample, through the twin
    sample, _, _, _ = feature_cache.cached(twin, x[picked], feed(x[picked], y[picked]), feed.preprocessing, inference)
    others = np.setdiff1d(np.arange(len(y)), picked)
    taken, status, _, _ = feature_cache.cached(features, x, feed(x[others], y[others]), feed.preprocessing,
                                               inference, known=(picked, np.asarray(sample)))
    whole = feature_cache.extract(features, feed(x, y), len(y), str(tmp_path / "whole"),
                                  inference.batch_function(features)[0])
    assert status == "miss" and taken.shape == (24, 1280)
    np.testing.assert_array_equal(taken, whole)  # bit for bit


def make_photos(root, side, per_class=12):
    """Two classes of `side`-px photos: a red and a blue square over noise."""
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (side, side, 3), dtype=np.uint8)
            pixels[side // 4:3 * side // 4, side // 4:3 * side // 4] = colour
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    paths = sorted(str(p) for p in root.glob("*/*.png"))
    return images.Files(paths, (32, 32)), np.array([0 if "/c0/" in p else 1 for p in paths])


def test_choose_measures_every_candidate_once_then_the_cache_answers(tmp_path, cache_dir, capsys):
    train = make_photos(tmp_path / "photos", 20)
    backbone, info = backbones.load("MobileNetV2", 32, None)
    twin = backbones.size_free("MobileNetV2", backbone)
    feed = backbones.feed("MobileNetV2", batch_size=8, seed=0)
    settings = choice.Settings((48, 32), ((), (8,)), epochs=2, learning_rate=1e-3, batch_size=8, reason="test")
    found = choice.choose(backbone, info, twin, train, 2, feed, settings)
    # Sizes with the first head, then the other head at the size that scored best.
    first = [t for t in found.tried if not t["head"]]
    assert [(t["image_size"], t["head"]) for t in found.tried] == [(48, []), (32, []),
                                                                     (choice.best(first, 24)["image_size"], [8])]
    assert choice.describe(settings) == "sizes 48, 32 with head linear, then head 8 at the best"
    assert all(0 <= t["held_out_accuracy"] <= 1 and t["held_out_loss"] > 0 for t in found.tried)
    assert found.sample == {"images": 24, "folds": 3} and not found.cached
    chosen = choice.best(found.tried, 24)
    assert (found.image_size, found.head) == (chosen["image_size"], chosen["head"])
    (entry,) = (cache_dir / "choices").glob("*.json")
    again = choice.choose(backbone, info, twin, train, 2, feed, settings)
    assert again.cached and again.tried == found.tried and again.image_size == found.image_size
    # Other settings are another entry; a damaged entry is said, removed, and measured again.
    entry.write_text("{not json")
    third = choice.choose(backbone, info, None, train, 2, feed, settings)  # no twin: each size rebuilt
    assert "discarding a damaged choice" in capsys.readouterr().out and not third.cached
    assert json.loads(entry.read_text())["tried"] == third.record()["tried"]
    assert [t["head"] for t in third.tried] == [[], [], [8]]
