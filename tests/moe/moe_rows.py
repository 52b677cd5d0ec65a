"""Sample rows for the MoE tests (alpaca for SFT, pairs for DPO)."""

WORDS = ["fox", "dog", "world", "review", "two", "four", "quick", "lazy"]
ROWS = {
    "alpaca": [{"instruction": f"Say {WORDS[i % 8]}", "output": f"Sentiment: {WORDS[(i + 1) % 8]}"} for i in range(8)],
    "dpo": [
        {"prompt": f"Say {WORDS[i % 8]}", "chosen": f"{WORDS[i % 8]} indeed", "rejected": f"no {WORDS[(i + 3) % 8]}"}
        for i in range(8)
    ],
}
