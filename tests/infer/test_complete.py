from koda.data.tokenizer import EOS, Tokenizer
from koda.infer import GenerationConfig, complete, generate
from tests.helpers.infer import tiny_model


def test_a_prompt_is_fed_as_the_start_of_a_document(tiny_data):
    tok, model = Tokenizer(tiny_data.tokenizer), tiny_model()
    cfg = GenerationConfig(max_new_tokens=8)
    text = complete(model, tok, ["x = 1\n"], cfg, stops=())[0]
    ids = generate(model, [[EOS, *tok.encode("x = 1\n")]], cfg)[0]
    assert text.token_ids == ids.token_ids and text.text == tok.decode(ids.token_ids)
