"""Model surgery: the student equals the parent's kept layers, round-trips through
save/load, generates the same with and without the KV cache, and is counted right."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import torch
from tiny import tiny_bart_dir, tiny_t5_dir
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LongT5Config,
    LongT5ForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MBartConfig,
    MBartForConditionalGeneration,
    MT5Config,
    MT5ForConditionalGeneration,
    PegasusConfig,
    PegasusForConditionalGeneration,
    PreTrainedModel,
    T5Config,
    T5ForConditionalGeneration,
    UMT5Config,
    UMT5ForConditionalGeneration,
)

from trainables.layers import layer_indices
from trainables.shrink import (
    UnsupportedModelError,
    arch_spec,
    count_parameters,
    layer_counts,
    layer_sizes,
    shrink,
    size_cache_by_decoder,
    student_size,
)

# Parents have 5 encoder and 4 decoder layers; dropping layer 0 on both sides forces the T5
# relative bias to move. Students with more decoder than encoder layers have tests of their own.
ENCODER_KEPT = (1, 3, 4)
DECODER_KEPT = (1, 3)

T5_KW = dict(
    vocab_size=99,
    d_model=32,
    d_ff=37,
    d_kv=8,
    num_heads=4,
    num_layers=5,
    num_decoder_layers=4,
    relative_attention_num_buckets=8,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)
BART_KW = dict(
    vocab_size=99,
    d_model=32,
    encoder_layers=5,
    decoder_layers=4,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    max_position_embeddings=64,
    dropout=0.0,
    attention_dropout=0.0,
    bos_token_id=0,
    pad_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=2,
    forced_eos_token_id=None,
)
OTHER_FAMILIES = {
    "mt5": lambda: MT5ForConditionalGeneration(MT5Config(**T5_KW)),
    "umt5": lambda: UMT5ForConditionalGeneration(UMT5Config(**T5_KW)),
    "longt5": lambda: LongT5ForConditionalGeneration(
        LongT5Config(
            **T5_KW,
            encoder_attention_type="transient-global",
            local_radius=2,
            global_block_size=4,
        )
    ),
    "mbart": lambda: MBartForConditionalGeneration(MBartConfig(**BART_KW)),
    "pegasus": lambda: PegasusForConditionalGeneration(PegasusConfig(**BART_KW)),
    "marian": lambda: MarianMTModel(MarianConfig(**BART_KW)),
}
FAMILIES = ["t5", "bart", *OTHER_FAMILIES]
CROSS_ATTENTION = re.compile(r"\.(EncDecAttention|encoder_attn)$")  # T5 / BART naming


@pytest.fixture
def parent(request, family):
    """A tiny model of `family` with every learned parameter (norms and biases too) random."""
    if family in OTHER_FAMILIES:
        torch.manual_seed(0)
        model = OTHER_FAMILIES[family]().eval()
    else:
        model = request.getfixturevalue(f"tiny_{family}")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            # Frozen tensors are derived, not learned: Marian rebuilds its sinusoidal position
            # table on load, so a randomized one would not survive save/load.
            if p.requires_grad:
                torch.nn.init.normal_(p)
    return model


def expected_student_state(
    parent: PreTrainedModel, encoder_kept: tuple[int, ...], decoder_kept: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """The parent's state dict renamed the way the student must hold it."""
    spec = arch_spec(parent.config)
    stacks = {spec.encoder_layers: encoder_kept, spec.decoder_layers: decoder_kept}
    pattern = re.compile(rf"^({'|'.join(map(re.escape, stacks))})\.(\d+)\.(.*)$")
    expected = {}
    for key, tensor in parent.state_dict().items():
        match = pattern.match(key)
        if match is None:
            expected[key] = tensor
            continue
        path, index, rest = match.group(1), int(match.group(2)), match.group(3)
        kept = stacks[path]
        if index in kept:
            expected[f"{path}.{kept.index(index)}.{rest}"] = tensor
        if spec.shared_relative_bias and index == 0 and "relative_attention_bias" in rest:
            expected[f"{path}.0.{rest}"] = tensor  # the first kept block owns the bias
    return expected


def greedy(model: PreTrainedModel, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    # min_new_tokens keeps random models from stopping at EOS after one token.
    return model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=5,
        min_new_tokens=5,
        do_sample=False,
        num_beams=1,
        **kwargs,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_student_is_the_parents_kept_layers(parent, family):
    expected = expected_student_state(parent, ENCODER_KEPT, DECODER_KEPT)
    student = shrink(parent, ENCODER_KEPT, DECODER_KEPT)
    state = student.state_dict()
    assert sorted(state) == sorted(expected)
    for key, tensor in state.items():
        assert torch.equal(tensor, expected[key]), key
        assert tensor.data_ptr() != expected[key].data_ptr(), f"{key} shares memory"


@pytest.mark.parametrize("family", FAMILIES)
def test_parent_is_untouched(parent, family):
    before = {key: tensor.clone() for key, tensor in parent.state_dict().items()}
    layer_ids = [m.layer_idx for m in parent.modules() if hasattr(m, "layer_idx")]
    shrink(parent, ENCODER_KEPT, DECODER_KEPT)
    after = parent.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[key], before[key]) for key in before)
    assert [m.layer_idx for m in parent.modules() if hasattr(m, "layer_idx")] == layer_ids
    assert layer_counts(parent.config) == (5, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_are_renumbered_for_the_cache(parent, family):
    spec = arch_spec(parent.config)
    student = shrink(parent, ENCODER_KEPT, DECODER_KEPT)
    for path in (spec.encoder_layers, spec.decoder_layers):
        for position, layer in enumerate(student.get_submodule(path)):
            ids = {m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")}
            # LongT5's local encoder attention never caches and has no layer_idx.
            no_ids = family == "longt5" and path == spec.encoder_layers
            assert ids == (set() if no_ids else {position}), (path, ids)
    decoder = student.get_submodule(spec.decoder_layers)
    cross = [m for name, m in decoder.named_modules() if CROSS_ATTENTION.search(name)]
    assert [m.layer_idx for m in cross] == [0, 1]


@pytest.mark.parametrize("family", ["t5", "mt5", "longt5", "umt5"])
def test_first_kept_block_carries_the_relative_bias(parent, family):
    # Its values are checked in test_student_is_the_parents_kept_layers.
    student = shrink(parent, ENCODER_KEPT, DECODER_KEPT)
    for stack in (student.encoder.block, student.decoder.block):
        owners = [owns_relative_bias(block) for block in stack]
        # T5, mT5, LongT5 share one bias from the first block; UMT5 blocks each own one.
        rest = [family == "umt5"] * (len(stack) - 1)
        assert owners == [True, *rest]


def owns_relative_bias(block: torch.nn.Module) -> bool:
    """Whether a T5-family block computes a position bias, checking flag and table agree."""
    flag = any(getattr(m, "has_relative_attention_bias", False) for m in block.modules())
    table = any("relative_attention_bias" in name for name, _ in block.named_parameters())
    assert flag == table
    return flag


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trips_and_cache_agrees(parent, family, tmp_path):
    student = shrink(parent, ENCODER_KEPT, DECODER_KEPT)
    student.save_pretrained(tmp_path)
    loaded, info = type(student).from_pretrained(tmp_path, output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert layer_counts(loaded.config) == layer_counts(student.config) == (3, 2)
    assert loaded.config.num_hidden_layers == 3  # an alias of the encoder count in both families

    input_ids = torch.randint(3, 99, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoder_ids = torch.full((2, 1), student.config.decoder_start_token_id)
        logits = student(input_ids, decoder_input_ids=decoder_ids).logits
        assert torch.allclose(loaded(input_ids, decoder_input_ids=decoder_ids).logits, logits)
        cached = greedy(loaded, input_ids, use_cache=True)
        uncached = greedy(loaded, input_ids, use_cache=False)
    assert cached.shape == (2, 6)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, greedy(student, input_ids, use_cache=True))


@pytest.mark.parametrize("family", ["t5"])
@pytest.mark.xfail(
    raises=IndexError,
    strict=True,
    reason="transformers 5.x sizes a T5 decoder's generation cache by num_layers, the encoder "
    "count, unless the config also names decoder_layers (shrink writes it); passes once fixed "
    "upstream, and then size_cache_by_decoder can go",
)
def test_t5_cache_sized_by_encoder_count(parent, family):
    student = shrink(parent, (0,), (0, 1, 2))
    del student.config.decoder_layers  # the config as transformers alone would write it
    greedy(student, torch.randint(3, 99, (1, 7)), use_cache=True)


@pytest.mark.parametrize("family", ["t5", "longt5", "bart"])
def test_deeper_decoder_generates_with_the_default_cache(parent, family, tmp_path):
    student = shrink(parent, (0,), (0, 1, 2))
    student.save_pretrained(tmp_path)
    loaded = type(student).from_pretrained(tmp_path).eval()
    assert loaded.config.get_text_config(decoder=True).num_hidden_layers == 3
    input_ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cached = greedy(loaded, input_ids, use_cache=True)
        assert torch.equal(cached, greedy(loaded, input_ids, use_cache=False))


def test_config_sizes_the_cache_from_a_deeper_decoder(tmp_path):
    path = tiny_t5_dir(tmp_path, layers=(1, 3))
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    size_cache_by_decoder(model.config)
    model.save_pretrained(path)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    assert json.loads((path / "config.json").read_text())["decoder_layers"] == 3
    assert reloaded.config.num_layers == 1  # the encoder is untouched
    inputs = AutoTokenizer.from_pretrained(path)(
        ["a package that does things"], return_tensors="pt"
    )
    with torch.no_grad():
        cached = reloaded.generate(**inputs, max_new_tokens=8, do_sample=False)
        uncached = reloaded.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_cache_fix_leaves_bart_alone(tmp_path):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_bart_dir(tmp_path, layers=(1, 3)))
    before = model.config.to_dict()
    size_cache_by_decoder(model.config)
    assert model.config.to_dict() == before


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "kept", [(ENCODER_KEPT, DECODER_KEPT), ((0,), (0, 1, 2)), ((4,), (3,)), ((0, 1, 2, 3, 4), (0,))]
)
def test_a_students_size_is_known_before_it_is_cut(parent, family, kept):
    predicted = student_size(count_parameters(parent), layer_sizes(parent), *kept)
    assert predicted == count_parameters(shrink(parent, *kept))


def test_t5_stack_configs_count_their_own_blocks(tiny_t5):
    student = shrink(tiny_t5, ENCODER_KEPT, DECODER_KEPT)
    assert (student.config.num_layers, student.config.num_decoder_layers) == (3, 2)
    assert (student.encoder.config.num_layers, len(student.encoder.block)) == (3, 3)
    assert (student.decoder.config.num_layers, len(student.decoder.block)) == (2, 2)
    assert tiny_t5.encoder.config.num_layers == 5 and tiny_t5.decoder.config.num_layers == 4


def t5_parameters(config: T5Config, n_encoder: int, n_decoder: int) -> tuple[int, int]:
    """(total, embedding) parameters of a ReLU T5 with a tied LM head, from its config."""
    d, inner = config.d_model, config.num_heads * config.d_kv
    attention = 4 * d * inner  # q, k, v, o; T5 linears have no bias
    feed_forward = 2 * d * config.d_ff  # wi, wo
    encoder_block = attention + feed_forward + 2 * d  # + 2 RMS norms (scale only)
    decoder_block = 2 * attention + feed_forward + 3 * d  # self + cross attention, 3 norms
    relative_bias = config.relative_attention_num_buckets * config.num_heads  # one per stack
    embedding = config.vocab_size * d + 2 * relative_bias
    blocks = n_encoder * encoder_block + n_decoder * decoder_block
    return embedding + blocks + 2 * d, embedding  # + final norm of each stack


def test_count_matches_the_t5_formula(tiny_t5):
    total, embedding = t5_parameters(tiny_t5.config, 3, 2)
    count = count_parameters(shrink(tiny_t5, ENCODER_KEPT, DECODER_KEPT))
    assert (count.total, count.embedding) == (total, embedding)
    assert count.non_embedding == total - embedding


@pytest.fixture(scope="module")
def t5_small() -> T5ForConditionalGeneration:
    """The t5-small architecture on the meta device: shapes only, no memory, no hub."""
    config = T5Config(
        vocab_size=32128,
        d_model=512,
        d_ff=2048,
        d_kv=64,
        num_heads=8,
        num_layers=6,
        num_decoder_layers=6,
        relative_attention_num_buckets=32,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        return T5ForConditionalGeneration(config)


@pytest.mark.parametrize(
    ("encoder_kept", "decoder_kept", "millions"),
    [
        (range(6), range(6), 60.5),
        (range(6), layer_indices("sft", 6, 3), 47.9),
        (layer_indices("sft", 6, 3), layer_indices("sft", 6, 3), 38.5),
    ],
)
def test_t5_small_sizes(t5_small, encoder_kept, decoder_kept, millions):
    student = shrink(t5_small, list(encoder_kept), list(decoder_kept))
    total, embedding = t5_parameters(t5_small.config, len(encoder_kept), len(decoder_kept))
    count = count_parameters(student)
    assert (count.total, count.embedding) == (total, embedding)
    assert round(count.total / 1e6, 1) == millions


def test_untied_token_tables_count_as_embedding():
    tied = BartForConditionalGeneration(BartConfig(**BART_KW))
    untied = BartForConditionalGeneration(BartConfig(**BART_KW, tie_word_embeddings=False))
    tables = (
        untied.model.shared,
        untied.model.encoder.embed_tokens,
        untied.model.decoder.embed_tokens,
        untied.lm_head,
    )
    extra = (len({t.weight.data_ptr() for t in tables}) - 1) * 99 * 32
    assert extra > 0  # at least the lm_head is a separate tensor
    assert count_parameters(untied).total == count_parameters(tied).total + extra
    assert count_parameters(untied).embedding == count_parameters(tied).embedding + extra
    assert count_parameters(untied).non_embedding == count_parameters(tied).non_embedding


def test_bart_embedding_is_tokens_and_positions(tiny_bart):
    count = count_parameters(tiny_bart)
    positions = (BART_KW["max_position_embeddings"] + 2) * 32  # BART offsets positions by 2
    assert count.embedding == 99 * 32 + 2 * positions  # tied lm_head counted once
    assert count.total == sum(p.numel() for p in tiny_bart.parameters())


def test_layer_counts_read_each_family():
    assert layer_counts(T5Config(**T5_KW)) == (5, 4)
    assert layer_counts(T5Config(num_layers=3)) == (3, 3)  # decoder defaults to the encoder
    assert layer_counts(MBartConfig(**BART_KW)) == (5, 4)


def test_unsupported_architecture_is_named():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4))
    supported = "bart, longt5, marian, mbart, mt5, pegasus, t5, umt5"
    with pytest.raises(UnsupportedModelError, match=f"'gpt2'; supported model types: {supported}"):
        shrink(gpt2, [0], [0])
    with pytest.raises(ValueError, match="cannot shrink model type 'gpt2'"):
        layer_counts(gpt2.config)


def test_base_model_without_lm_head_is_refused(tiny_bart):
    with pytest.raises(UnsupportedModelError, match="BartModel has no layer list"):
        shrink(tiny_bart.model, [0], [0])


@pytest.mark.parametrize(
    ("encoder_kept", "decoder_kept", "message"),
    [
        ([], [0], r"encoder\.block: keep at least one layer"),
        ([0], [], r"decoder\.block: keep at least one layer"),
        ([2, 1], [0], r"ascending and unique, got \[2, 1\]"),
        ([1, 1], [0], r"ascending and unique, got \[1, 1\]"),
        ([0, 5], [0], r"encoder\.block: layer indices must lie in 0\.\.4, got \[0, 5\]"),
        ([0], [-1, 0], r"decoder\.block: layer indices must lie in 0\.\.3"),
        ([0], [4], r"must lie in 0\.\.3, got \[4\]"),
    ],
)
def test_bad_indices_are_refused(tiny_t5, encoder_kept, decoder_kept, message):
    with pytest.raises(ValueError, match=message):
        shrink(tiny_t5, encoder_kept, decoder_kept)
