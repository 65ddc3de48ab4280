"""Moved to `t2t_jax.models.hf_convert` (the T5 family's Hugging Face format); this name is kept for
the scripts that import it (tools/bench_train.py, tools/bench_decode.py)."""

from t2t_jax.models.hf_convert import (  # pylint: disable=unused-import
    CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, config_from_hf, config_to_hf, export_hf_t5, extend_vocab,
    hf_to_params, load_hf_t5, params_to_hf, read_hf_config, read_safetensors)
