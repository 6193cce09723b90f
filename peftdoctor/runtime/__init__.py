"""Deep checks that load the base model with torch, transformers and peft."""
