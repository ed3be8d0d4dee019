"""The README's local-embedding client, run against a live server with a tiny CLIP index."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from PIL import Image

from demo.sample_images import product_image
from similarity.selectors.search import similar_to_image
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

README = Path(__file__).resolve().parents[3] / "README.md"
MARKER = "<!-- client"


def readme_client() -> str:
    """The first ```python block after the client marker in README.md."""
    text = README.read_text()
    after = text[text.index(MARKER):]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


@pytest.mark.django_db(transaction=True)
def test_readme_client_embeds_locally_and_matches_server_side_embedding(
    live_server, tiny_clip, tmp_path
):
    make_catalog(8)
    index_build_run(model=str(tiny_clip), progress=False)
    photos = []
    for seed in (2, 5):
        path = tmp_path / f"photo{seed}.png"
        product_image(seed, size=96).save(path)
        photos.append(str(path))
    namespace: dict = {}
    exec(compile(readme_client(), "README.md client", "exec"), namespace)
    answers = namespace["similar_by_photos"](live_server.url, photos, k=3)
    assert [a["status"] for a in answers] == [200, 200]
    assert [a["results"][0]["article_id"] for a in answers] == ["S0002", "S0005"]
    # The same pixels embedded by the server's model: the same neighbors and distances.
    # (An upload would differ slightly: the server reduces uploads while decoding them.)
    for photo, answer in zip(photos, answers, strict=True):
        server = similar_to_image(image=Image.open(photo).convert("RGB"), k=3).results
        assert [r.article_id for r in server] == [r["article_id"] for r in answer["results"]]
        for mine, theirs in zip(answer["results"], server, strict=True):
            assert mine["distance"] == pytest.approx(theirs.distance, abs=1e-5)
    with open(photos[0], "rb") as handle:  # and an upload still finds the same article
        uploaded = requests.post(f"{live_server.url}/api/similar/", files={"image": handle},
                                 data={"k": 1}, timeout=30).json()["results"]
    assert uploaded[0]["article_id"] == "S0002"


@pytest.mark.django_db(transaction=True)
def test_readme_client_refuses_a_model_clients_cannot_compute(live_server, tmp_path):
    make_catalog(4)
    index_build_run(model="classic", progress=False)
    namespace: dict = {}
    exec(compile(readme_client(), "README.md client", "exec"), namespace)
    with pytest.raises(RuntimeError, match="lookalike-client"):
        namespace["similar_by_photos"](live_server.url, [], k=3)
