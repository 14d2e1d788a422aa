"""Device placement: the annotators (training and prediction) and the evaluation of trained generators run on the
GPU when there is one, and give the CPU's answers. The CUDA cases skip without a GPU; run them on the worker with
`pytest tests/model/test_devices.py` (they need no mirror and no hub: the models are built from configs here)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tasks import base_model
from tasks.annotators import classifier as A
from tasks.common import devices
from tasks.domain import chat_template
from tasks.train import evaluation as train_eval

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU worker)")
WORDS = ("family friend work school health money freedom safety honest care help respect nature rules "
         "tradition power success fun adventure calm alone tired happy sad angry grateful proud scared").split()


@pytest.fixture(autouse=True)
def _fresh_device(monkeypatch):
    devices.torch_device.cache_clear()
    yield
    devices.torch_device.cache_clear()


def test_device_defaults_and_override(monkeypatch):
    monkeypatch.delenv(devices.ENV, raising=False)
    assert devices.torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    devices.torch_device.cache_clear()
    monkeypatch.setenv(devices.ENV, "cpu")
    assert devices.torch_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        devices.torch_device.cache_clear()
        monkeypatch.setenv(devices.ENV, "cuda")
        with pytest.raises(RuntimeError, match="ESVR_DEVICE=cuda.*no CUDA device"):
            devices.torch_device()


def _tiny_encoder(folder):
    """A random 2-layer BERT with a WordPiece vocabulary of WORDS, saved as an HF folder (a stand-in for MiniLM)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    return str(folder)


def _texts(n, seed):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(n)]
    labels = np.array([[float(w in t.split()) for w in ("family", "money", "nature", "fun")] for t in texts], np.float32)
    return A.LabelledTexts(texts, labels, ["family", "money", "nature", "fun"])


@cuda
def test_annotator_trains_and_predicts_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv(devices.ENV, raising=False)
    base = _tiny_encoder(tmp_path / "enc")
    tr, dv = _texts(64, 1), _texts(32, 2)
    cfg = SimpleNamespace(base_model=base, max_length=32, batch_size=8, epochs=2, max_steps=0, lr_encoder=1e-3,
                          lr_head=1e-2, weight_decay=0.0, warmup_ratio=0.0, freeze_embeddings=False, freeze_layers=0,
                          threshold_mode="global", num_threads=0, log_every=4)
    res = A.train_classifier(tr, dv, cfg, seed=3, metric="macro_f1")
    m = res.model
    assert m.device.type == "cuda" and all(p.device.type == "cuda" for p in m.parameters())
    gpu = m.predict_proba(dv.texts)
    assert gpu.shape == (32, 4) and np.isfinite(gpu).all() and res.history[-1]["train_loss"] < res.history[0]["train_loss"] * 1.5
    m.save(tmp_path / "det", res.thresholds)
    monkeypatch.setenv(devices.ENV, "cpu")
    devices.torch_device.cache_clear()
    cpu_model, th, _ = A.MeanPoolClassifier.load(tmp_path / "det")
    assert cpu_model.device.type == "cpu"
    np.testing.assert_allclose(cpu_model.predict_proba(dv.texts), gpu, atol=2e-3)  # TF32 on the GPU
    np.testing.assert_allclose(th, res.thresholds, rtol=1e-6)


@cuda
def test_generator_evaluation_on_the_gpu(tmp_path, monkeypatch):
    from tasks.train.common import load_causal_lm

    monkeypatch.delenv(devices.ENV, raising=False)
    tok = base_model.train_tokenizer([" ".join(WORDS)] * 50, 400, 1, chat_template.template("chatml"))
    arch = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=2, max_position_embeddings=128)
    base_model.build_tiny_llama(tok, arch, 0).save_pretrained(tmp_path / "lm")
    chat_template.save_tokenizer(tok, tmp_path / "lm")
    model, tok = load_causal_lm(tmp_path / "lm")
    assert model.device.type == "cuda"
    prompts = [[{"role": "user", "content": " ".join(WORDS[i:i + 5])}] for i in range(6)]
    outs = train_eval.generate(model, tok, prompts, max_new_tokens=5, batch_size=4, max_length=64)
    assert len(outs) == 6 and all(isinstance(o, str) for o in outs)
    done = [[{"role": "assistant", "content": "calm and happy"}]] * 6
    gpu_lp, n = train_eval.completion_logps(model, tok, prompts, done, max_length=64, batch_size=4)
    cpu_lp, n_cpu = train_eval.completion_logps(model.to("cpu"), tok, prompts, done, max_length=64, batch_size=4)
    assert n == n_cpu and np.allclose(gpu_lp, cpu_lp, atol=1e-2)
