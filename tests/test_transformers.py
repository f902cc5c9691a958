"""exaq_cpu as a transformers attention implementation, on the SmolLM2 GGUF
(transformers loads GGUF files): the exact kernel reproduces eager attention,
and 2-bit EXAQ gives the perplexity of ``python -m exaq_cpu.llama eval``."""
import os

import numpy as np
import pytest

try:
    import torch
    import transformers
except ImportError:  # pragma: no cover - CI installs both (README test command)
    if os.environ.get("CI"):
        raise
    pytest.skip("torch and transformers are not installed", allow_module_level=True)

import exaq_cpu.integrations.transformers as exaq_hf
from exaq_cpu.llama import LlamaModel, load_gguf, make_softmax
from exaq_cpu.llama.evaluate import default_eval_text, evaluate
from exaq_cpu.llama.gguf_loader import default_model_path
from exaq_cpu.llama.model import LlamaWeights
from exaq_cpu.llama.tokenizer import GGUFTokenizer

try:
    MODEL_PATH = default_model_path()
except FileNotFoundError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    pytest.skip(str(exc), allow_module_level=True)

CTX = 128


@pytest.fixture(scope="module")
def hf_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    exaq_hf.register("exaq_test_exact", bits=None)
    exaq_hf.register("exaq_test_b2", bits=2, clip="gauss")
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(MODEL_PATH.parent), gguf_file=MODEL_PATH.name, dtype=torch.float32, attn_implementation="eager")


@pytest.fixture(scope="module")
def ours():
    contents = load_gguf(MODEL_PATH)
    return LlamaWeights.from_gguf(contents), GGUFTokenizer(contents.tokenizer)


def _logits(model, ids, implementation, mask=None):
    model.set_attn_implementation(implementation)
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=mask).logits.numpy()


def test_exact_kernel_reproduces_eager_attention(hf_model, ours):
    _, tokenizer = ours
    ids = [tokenizer.encode(default_eval_text()[:2000])[:96]]
    eager = _logits(hf_model, ids, "eager")
    exact = _logits(hf_model, ids, "exaq_test_exact")
    assert np.abs(exact - eager).max() <= 1e-4 * np.abs(eager).max()
    quantized = _logits(hf_model, ids, "exaq_test_b2")
    assert np.abs(quantized - eager).max() > 1e-3 * np.abs(eager).max()  # the 2-bit path really ran


def test_padding_and_batches(hf_model, ours):
    """Left padding (a batch of two prompts of different lengths): padded keys get exactly 0."""
    _, tokenizer = ours
    a, b = tokenizer.encode("The capital of France is"), tokenizer.encode("Hello")
    width = max(len(a), len(b))
    ids = [[0] * (width - len(a)) + a, [0] * (width - len(b)) + b]
    mask = torch.tensor([[0] * (width - len(a)) + [1] * len(a), [0] * (width - len(b)) + [1] * len(b)])
    batch = _logits(hf_model, ids, "exaq_test_exact", mask)
    alone = _logits(hf_model, [b], "exaq_test_exact")
    assert np.abs(batch[1, -1] - alone[0, -1]).max() <= 1e-4 * np.abs(alone).max()


def test_two_bit_perplexity_matches_the_llama_loop(hf_model, ours):
    weights, tokenizer = ours
    ids = tokenizer.encode(default_eval_text()[:20000])[:2 * CTX]
    ours_ppl = evaluate(LlamaModel(weights, make_softmax("exaq", bits=2, clip="gauss")), ids, CTX,
                        progress=False).perplexity
    nll, count = 0.0, 0
    for start in range(0, len(ids), CTX):
        window = ids[start:start + CTX]
        logits = _logits(hf_model, [window], "exaq_test_b2")[0, :-1].astype(np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        nll -= logp[np.arange(len(window) - 1), window[1:]].sum()
        count += len(window) - 1
    hf_ppl = float(np.exp(nll / count))
    print(f"\n2-bit EXAQ perplexity: transformers {hf_ppl:.3f}, exaq_cpu.llama {ours_ppl:.3f}")
    assert abs(hf_ppl / ours_ppl - 1) <= 0.01


def test_register_checks_its_arguments():
    with pytest.raises(ValueError, match="bits"):
        exaq_hf.register("exaq_bad", bits=5)
    with pytest.raises(ValueError, match="clip"):
        exaq_hf.register("exaq_bad", bits=None, clip="row")
    with pytest.raises(TypeError, match="name"):
        exaq_hf.register("", bits=2)
