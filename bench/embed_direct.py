"""The baseline for bulk embedding: fastembed called directly, same model, same texts.

    python bench/embed_direct.py TEXTS.json MODEL_FOLDER [--sorted]

--sorted feeds the texts shortest first, as ravana-db does, to isolate ravana-db's own cost.
"""

import json
import sys

from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType

texts = json.loads(open(sys.argv[1]).read())
if "--sorted" in sys.argv:
    texts.sort(key=len)
TextEmbedding.add_custom_model(model="bench/minilm", pooling=PoolingType.MEAN, normalization=True,
                               sources=ModelSource(hf="local/minilm"), dim=384,
                               model_file="model.onnx")
model = TextEmbedding("bench/minilm", specific_model_path=sys.argv[2])
vectors = list(model.embed(texts, batch_size=32))
print(len(vectors), file=sys.stderr)
