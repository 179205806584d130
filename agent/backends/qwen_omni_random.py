"""Random-weight Qwen2.5-Omni checkpoints for tests and benchmarks; nothing is downloaded.

`save_tiny(path)` writes a 0.2 M-parameter model with the real classes, a word-level
tokenizer, a Whisper feature extractor and a speaker map, loadable like a real
checkpoint with `from_pretrained(path, local_files_only=True)`. `full_size_config()`
has the layer sizes of Qwen2.5-Omni-7B, for timing the serving path on a GPU.
"""

from __future__ import annotations

from pathlib import Path

SPEAKER = "Chelsie"
_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
    "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",
    "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>",
]
_WORDS = (
    "system user assistant hello hi yes no okay sure thanks please table book name time "
    "open close today tomorrow evening morning one two three four you we are is the a to "
    "for at of and can help what your . , ? !"
).split()


def tiny_vocab() -> dict[str, int]:
    """The tiny word-level vocabulary: the special tokens, a few words, then `<unk>`."""
    tokens = _SPECIAL + _WORDS + ["<unk>"]
    return {token: i for i, token in enumerate(tokens)}


def tiny_config():
    """A `Qwen2_5OmniConfig` for a tiny random model (thinker, talker and token2wav) whose
    token ids are those of `tiny_vocab()`."""
    from transformers import Qwen2_5OmniConfig

    vocab = tiny_vocab()
    ids = {name: vocab[tok] for name, tok in [
        ("audio_token_index", "<|AUDIO|>"), ("audio_start_token_id", "<|audio_bos|>"),
        ("audio_end_token_id", "<|audio_eos|>"), ("image_token_index", "<|IMAGE|>"),
        ("video_token_index", "<|VIDEO|>"), ("vision_start_token_id", "<|vision_bos|>"),
        ("vision_end_token_id", "<|vision_eos|>"), ("user_token_id", "user"),
    ]}
    hidden = 32
    thinker = {
        **ids,
        "audio_config": {
            "num_mel_bins": 128, "d_model": 32, "encoder_layers": 1,
            "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "output_dim": hidden,
            "n_window": 100, "max_source_positions": 1500,
        },
        "vision_config": {
            "depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
            "out_hidden_size": hidden, "fullatt_block_indexes": [0],
        },
        "text_config": {
            "vocab_size": 64, "hidden_size": hidden, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_parameters": {
                "rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2],
            },
            "eos_token_id": vocab["<|im_end|>"], "pad_token_id": vocab["<|endoftext|>"],
        },
    }
    talker = {
        **{k: v for k, v in ids.items() if not k.startswith("user")},
        "vocab_size": 32, "embedding_size": hidden, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 16,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 2, 4]},
        "tts_codec_pad_token_id": 28, "tts_codec_start_token_id": 29,
        "tts_codec_end_token_id": 30, "tts_codec_mask_token_id": 31,
        "tts_text_pad_token_id": vocab["<tts_pad>"],
        "tts_text_start_token_id": vocab["<tts_text_bos>"],
        "tts_text_end_token_id": vocab["<tts_text_eod>"],
    }
    token2wav = {
        "dit_config": {
            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 16,
            "emb_dim": 16, "ff_mult": 2, "block_size": 24, "look_ahead_layers": [1],
            "look_backward_layers": [0], "repeats": 2, "num_embeds": 32, "mel_dim": 80,
            "enc_emb_dim": 16, "enc_dim": 16, "enc_channels": [16, 16, 16, 32],
            "enc_kernel_sizes": [5, 3, 3, 1], "enc_dilations": [1, 2, 3, 1],
            "enc_attention_channels": 8, "enc_se_channels": 8,
        },
        "bigvgan_config": {
            "mel_dim": 80, "upsample_initial_channel": 32, "upsample_rates": [8, 5, 6],
            "upsample_kernel_sizes": [16, 10, 12], "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]],
        },
    }
    return Qwen2_5OmniConfig(
        thinker_config=thinker, talker_config=talker, token2wav_config=token2wav,
        enable_audio_output=True,
    )


def full_size_config():
    """Qwen2.5-Omni-7B's layer sizes (the library defaults) with the tiny tokenizer's ids."""
    from transformers import Qwen2_5OmniConfig

    config = Qwen2_5OmniConfig(enable_audio_output=True)
    tiny = tiny_config()
    for part in ("thinker_config", "talker_config"):
        for key, value in getattr(tiny, part).to_dict().items():
            if key.endswith(("token_index", "token_id")) and key.startswith(
                ("audio", "image", "video", "vision", "user", "tts_text")
            ):
                setattr(getattr(config, part), key, value)
    return config


def speaker_map(config, *, seed: int = 0) -> dict:
    """A random voice in the shape of `spk_dict.pt`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    dit = config.token2wav_config.dit_config
    bos = config.talker_config.tts_text_start_token_id
    return {SPEAKER: {
        "bos_token": bos,
        "cond": torch.randn(1, dit.enc_emb_dim, generator=generator),
        "ref_mel": torch.randn(1, 60, dit.mel_dim, generator=generator),
    }}


def tiny_tokenizer():
    """A fast word-level tokenizer over `tiny_vocab()` (split on whitespace), with its special
    tokens registered."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab=tiny_vocab(), unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.add_special_tokens({"additional_special_tokens": _SPECIAL})
    return fast


def save_tiny(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny random checkpoint directory, shaped like the real one."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_config()
    model = Qwen2_5OmniForConditionalGeneration(config)
    # Random vocoder weights whisper (RMS ~1 in int16); make the noise loud enough to
    # count as speech for a caller's voice activity detection.
    with torch.no_grad():
        model.token2wav.code2wav_bigvgan_model.conv_post.weight.mul_(3000.0)
    model.save_pretrained(path)
    torch.save(speaker_map(config, seed=seed), path / "spk_dict.pt")
    tiny_tokenizer().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=128, sampling_rate=16000).save_pretrained(path)
    return path
