"""Constants shared by rendering, masking, collation and the loss.

Kept in one module so that "never supervised" has exactly one definition.
"""

IGNORE_INDEX = -100  # label value that torch.nn.functional.cross_entropy skips
IMAGE_MARKER = "<image>"  # the placeholder LLaVA JSON uses in a human turn

# Every token of a rendered conversation belongs to exactly one of these kinds.
SPAN_KINDS = (
    "special",  # tokens the tokenizer adds itself (BOS); they cover no text
    "system",  # the system prompt
    "role",  # role names such as USER: / ASSISTANT: / <|im_start|>user
    "format",  # separators and other chat-format glue (spaces, newlines)
    "image",  # the image placeholder: one position, expanded into features by the model
    "instruction",  # the user's words
    "template",  # a frequent task-template sentence inside a user turn
    "response",  # the assistant's words
    "eos",  # the end-of-turn token that closes an assistant turn
)
KIND_INDEX = {kind: i for i, kind in enumerate(SPAN_KINDS)}

# Kinds that no scope may supervise.
NEVER_SUPERVISED = frozenset({"special", "image"})
