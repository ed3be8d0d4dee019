"""Tiny models with random (seeded) weights, saved like real checkpoints, for offline tests."""

from __future__ import annotations

import json
import string
from pathlib import Path

SEED = 0


def build_tiny_clip(path: Path, *, seed: int = SEED) -> Path:
    """A tiny CLIP saved in the layout of sentence-transformers/clip-ViT-B-32; returns its dir.

    Like the hub model: the transformers CLIPModel + CLIPProcessor live in ``0_CLIPModel/``
    and ``modules.json`` names the (legacy) ``sentence_transformers.models.CLIPModel`` module.
    Towers: hidden 32, 2 layers, 32x32 images in 8x8 patches, projection to 16 dims.
    """
    from transformers import CLIPConfig, CLIPImageProcessorPil

    tokenizer = _tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer.get_vocab()),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return _save_sentence_clip(Path(path), config, image_processor, tokenizer, seed)


def build_clip_vit_b32(path: Path, *, seed: int = SEED) -> Path:
    """Full-size CLIP ViT-B/32 (default CLIPConfig: hidden 768, 12 layers, patch 32, 224 px,
    projection 512) with random weights, in the same sentence-transformers layout, for
    benchmarks: it costs the same compute as the trained model. Only the tokenizer is tiny.
    """
    from transformers import CLIPConfig, CLIPImageProcessorPil

    tokenizer = _tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    return _save_sentence_clip(Path(path), config, image_processor, tokenizer, seed)


def _save_sentence_clip(path: Path, config, image_processor, tokenizer, seed: int) -> Path:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    module_dir = path / "0_CLIPModel"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(module_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(module_dir)
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "0_CLIPModel",
            "type": "sentence_transformers.models.CLIPModel",
        }
    ]
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    return path


def build_tiny_vit(path: Path, *, pooler: bool = True, seed: int = SEED) -> Path:
    """A tiny ViT backbone + image processor (32x32 input), loadable by AutoModel from ``path``.

    ``pooler=False`` saves no pooler weights, like DINO ViT checkpoints: loading then
    initialises a random pooler, which the embedder must not use.
    """
    import torch
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ViTModel(config, add_pooling_layer=pooler).eval()
    model.save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)


def build_tiny_resnet(path: Path, *, seed: int = SEED) -> Path:
    """A tiny ResNet backbone whose pooled output is a (n, c, 1, 1) conv map."""
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetModel

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ResNetModel(config).eval()
    model.save_pretrained(path)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(path)
    return Path(path)


def _tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    # Byte-level BPE with no merges: every lowercase letter or digit is a token.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits:
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])
