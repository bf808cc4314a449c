defmodule CouncilEx.Error do
  @moduledoc """
  An error of a council run, as data: in a member result's `:error` (nil
  when the member succeeded), and in a failed run's errors (`run_failed`
  events, `{:error, {:failed, errors, result}}`, `result.errors`).

      {:error, {:failed, [%CouncilEx.Error{kind: kind, message: message} | _], _result}} =
        CouncilEx.run(MyCouncil, "input")

  `kind` is the core's classification of the failure (`error_kind` in
  docs/protocol.md):

    * `:transient` - a refused or reset connection, a timeout, HTTP
      408/409/425/429/5xx, a cut stream: the only kind the core retries
      (`retryable?/1`);
    * `:permanent` - HTTP 401/403, an unknown model, another 4xx, a body
      over the cap, no API key;
    * `:validation` - an answer that is not usable: a ballot that does not
      parse, a response not in the API's format;
    * `:cancelled` - the run was cancelled while the call was under way.

  Providers that do not classify their failures (`mock`, `exec`, `beam`
  members, sub-councils) fail as `:transient`.

  A run's error about a round that failed has the kind of the member
  failure that failed it (`failure_mode: :fail_fast`), or, when no member
  of the round succeeded, `:transient` if all their failures were, else
  `:permanent`; other errors of a run are `:permanent`.

  The other fields: `message` (the core's text; `to_string/1` gives it),
  `member_id` (a binary, nil when it is about no member), `round_name`
  (an atom when that atom exists, else a binary; nil when about no round),
  `context` (for a member's error: `%{status: status, attempts: n}`, the
  member result's; `%{}` otherwise), `reason` and `stacktrace` (nil: the
  core reports neither).
  """

  @typedoc "How a failure is classified (see the moduledoc)."
  @type kind :: :transient | :permanent | :validation | :cancelled

  @type t :: %__MODULE__{
          kind: kind,
          message: binary | nil,
          member_id: binary | nil,
          round_name: atom | binary | nil,
          reason: term | nil,
          context: map,
          stacktrace: list | nil
        }

  defstruct kind: nil,
            message: nil,
            member_id: nil,
            round_name: nil,
            reason: nil,
            context: %{},
            stacktrace: nil

  @doc "Whether the failure is of a kind the core retries (`:transient`)."
  @spec retryable?(t) :: boolean
  def retryable?(%__MODULE__{kind: kind}), do: kind == :transient

  defimpl String.Chars do
    def to_string(%{message: message}), do: message || ""
  end
end
