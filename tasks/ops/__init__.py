"""Operations tools for a GPU worker (smoke runs, GPU budget)."""
