"""plots.py: the figures evaluate.py saves, on inputs at the edges of what runs produce."""
import numpy as np

import plots


def test_embedding_plot_with_fewer_test_images_than_pca_components(tmp_path):
    # 3 classes x 6 images of 128-d embeddings (a small folder of your own): PCA to 50
    # dimensions cannot run on 18 points, so fewer components are kept.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 6)
    embeddings = rng.normal(size=(18, 128)) + labels[:, None]
    path = tmp_path / "embeddings.png"
    plots.plot_embeddings(embeddings, labels, ["a", "b", "c"], str(path))
    assert path.stat().st_size > 1000
