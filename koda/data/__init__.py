"""Corpus, tokenizer, token shards and the rank-sliced loader."""
