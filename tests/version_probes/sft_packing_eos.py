"""PD404 on old TRL: which collator SFTTrainer builds, and whether eos stays a training target, when
pad = eos. Not part of the test run: it needs the old versions, so it runs in its own environment:

    python -m venv /tmp/trl086 && /tmp/trl086/bin/pip install torch==2.13.0 \
        "trl==0.8.6" "transformers==4.40.2" "peft==0.10.0" "datasets<3" "accelerate<1" rich
    /tmp/trl086/bin/python tests/version_probes/sft_packing_eos.py

Measured (trl 0.8.6, transformers 4.40.2, CPU):
    packing=True:  collator DataCollatorWithPadding; eos positions 14, eos kept as targets 14
    packing=False: collator DataCollatorForLanguageModeling; eos positions 10, eos kept as targets 0
so PD404 fires for SFTTrainer without packing on trl <= 0.14 and stays silent with packing=True there.
"""

import tempfile

import transformers
import trl
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainingArguments
from trl import SFTTrainer


def word_tokenizer():
    """A word-level tokenizer built here (never the hub) whose pad token is set to its eos token."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, 64)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def first_batch(packing: bool, tokenizer, model, data):
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=4, max_steps=1, report_to=[], use_cpu=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, tokenizer=tokenizer,
                             dataset_text_field="text", max_seq_length=16, packing=packing)
        return type(trainer.data_collator).__name__, next(iter(trainer.get_train_dataloader()))


def main():
    tokenizer = word_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    texts = [" ".join(f"w{3 + (i * 7 + j) % 60}" for j in range(5 + i % 4)) + " <eos>" for i in range(40)]
    data = Dataset.from_dict({"text": texts})
    for packing in (True, False):
        collator, batch = first_batch(packing, tokenizer, model, data)
        eos = batch["input_ids"] == tokenizer.eos_token_id
        kept = int((batch["labels"][eos] != -100).sum())
        print(f"trl {trl.__version__} transformers {transformers.__version__} packing={packing}: "
              f"collator {collator}; eos positions {int(eos.sum())}, eos kept as targets {kept}")


if __name__ == "__main__":
    main()
