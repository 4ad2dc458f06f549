"""How a classifier does per class: the numbers a run's record keeps beside its accuracy."""

import numpy as np


def confusion(y_true, y_pred, num_classes):
    """counts[i, j]: images of class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return counts


def per_class(y_true, y_pred, class_names):
    """{class name: {precision, recall, f1, support}}: precision, of the images predicted as the class, the share
    that are; recall, of the class's images, the share found; f1 their harmonic mean (0 where undefined);
    support, the class's images."""
    counts = confusion(y_true, y_pred, len(class_names))
    found = {}
    for i, name in enumerate(class_names):
        hit, predicted, actual = counts[i, i], counts[:, i].sum(), counts[i, :].sum()
        precision = hit / predicted if predicted else 0.0
        recall = hit / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        found[name] = {"precision": round(float(precision), 6), "recall": round(float(recall), 6),
                       "f1": round(float(f1), 6), "support": int(actual)}
    return found
