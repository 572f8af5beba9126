"""Drives two smg routers that share Redis with the official OpenAI Python SDK.

The gateway owns the Responses and Conversations APIs; this checks that what the SDK sends and
parses works end to end: plain and streamed responses, previous_response_id across routers,
conversations, retrieve, input items. Run by Tests/SDK/run.sh (./dev sdk), which starts the
processes. Exits non-zero with a message on the first difference.
"""
import sys

from openai import OpenAI

ANSWER = " the model says hello from a simulated worker"
MODEL = "sim-model"


def fnv1a(text: str) -> str:
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return format(h, "x")


def prompt_digest(text: str) -> str:
    """What the simulated worker reports (x-sim-prompt) after reading these messages."""
    return f"{len(text)}:{fnv1a(text)}"


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"openai-sdk: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"openai-sdk: ok: {what}")


def main(url_a: str, url_b: str) -> None:
    a = OpenAI(base_url=url_a + "/v1", api_key="unused", max_retries=0, timeout=30)
    b = OpenAI(base_url=url_b + "/v1", api_key="unused", max_retries=0, timeout=30)

    first = a.responses.create(model=MODEL, input="What is a router?", instructions="Be brief.")
    check(first.id.startswith("resp_") and first.status == "completed", "responses.create answers a completed response")
    check(first.output_text == ANSWER, "output_text is the worker's answer")
    check(first.usage is not None and first.usage.output_tokens == 8, "usage is parsed")

    raw = b.responses.with_raw_response.create(model=MODEL, input="And a mesh?", previous_response_id=first.id)
    second = raw.parse()
    check(second.previous_response_id == first.id, "previous_response_id on another router")
    check(raw.headers.get("x-sim-prompt") == prompt_digest("What is a router?" + ANSWER + "And a mesh?"),
          "the worker read turn 1 when turn 2 went to the other router")

    types = []
    deltas = []
    completed = None
    with b.responses.stream(model=MODEL, input="Stream it.", previous_response_id=second.id) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        completed = stream.get_final_response()
    check(types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed",
          "streamed events open and close in order")
    check("".join(deltas) == ANSWER and completed.output_text == ANSWER, "streamed text equals the final response")

    streamed_raw = b.responses.create(model=MODEL, input="Raw stream.", stream=True)
    raw_types = [event.type for event in streamed_raw]
    check(raw_types.count("response.output_text.delta") == 8, "responses.create(stream=True) yields typed events")

    retrieved = a.responses.retrieve(completed.id)
    check(retrieved.output_text == ANSWER and retrieved.id == completed.id, "responses.retrieve on the first router finds the streamed response")
    inputs = a.responses.input_items.list(second.id)
    check([item.type for item in inputs.data] == ["message"], "responses.input_items.list")

    conversation = a.conversations.create(items=[{"type": "message", "role": "user", "content": "Remember: blue."}],
                                          metadata={"topic": "colors"})
    check(conversation.id.startswith("conv_"), "conversations.create")
    turn = b.responses.with_raw_response.create(model=MODEL, input="Which color?", conversation=conversation.id)
    check(turn.headers.get("x-sim-prompt") == prompt_digest("Remember: blue.Which color?"), "a conversation's items reach the worker")
    items = a.conversations.items.list(conversation.id, order="asc")
    check([item.role for item in items.data] == ["user", "user", "assistant"], "conversations.items.list has the turn's input and output")
    check(a.conversations.retrieve(conversation.id).metadata == {"topic": "colors"}, "conversations.retrieve")

    deleted = a.responses.delete(first.id)
    check(deleted is None or getattr(deleted, "deleted", True), "responses.delete")
    try:
        b.responses.create(model=MODEL, input="x", previous_response_id=first.id)
        check(False, "a deleted previous response is refused")
    except Exception as error:  # the SDK raises BadRequestError
        check(getattr(error, "status_code", None) == 400, "a deleted previous response is refused with 400")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
