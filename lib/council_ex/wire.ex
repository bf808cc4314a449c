defmodule CouncilEx.Wire do
  @moduledoc """
  Translation between the C node's terms (docs/protocol.md) and what the
  Elixir API returns: round names and councils arrive as binaries (the node
  never creates atoms in this VM) and are turned back into existing atoms
  here; `started_at` becomes a `DateTime`.

  Atoms are only ever looked up (`String.to_existing_atom/1`): a name with
  no atom stays a binary.
  """

  @topic_prefix CouncilEx.Schema.topic_prefix()

  @doc "The pub/sub topic of a run id (a topic is returned unchanged)."
  @spec topic(binary) :: binary
  def topic(@topic_prefix <> _ = topic), do: topic
  def topic(run_id) when is_binary(run_id), do: @topic_prefix <> run_id

  # the core's default registry as users name it (a module-like atom) and
  # as the core does: the name most requests carry, made once (inspect/1
  # is not free on a start's path)
  @default_registry String.to_atom("Elixir." <> CouncilEx.Schema.default_registry())
  @default_registry_name inspect(@default_registry)

  @doc "The registry name as the C node sees it (`inspect/1` of an atom, a binary as is)."
  @spec registry_name(atom | binary) :: binary
  def registry_name(name) when is_binary(name), do: name
  def registry_name(@default_registry), do: @default_registry_name
  def registry_name(name) when is_atom(name), do: inspect(name)

  @doc "The council name sent to the C node: `\"Elixir.Mod\"` for a module, a binary as is."
  @spec council_name(module | binary) :: binary
  def council_name(council) when is_binary(council), do: council
  def council_name(council) when is_atom(council), do: Atom.to_string(council)

  @doc "A round name: the existing atom of that name, else the binary."
  @spec round_name(binary | atom) :: atom | binary
  def round_name(name) when is_binary(name) do
    String.to_existing_atom(name)
  rescue
    ArgumentError -> name
  end

  def round_name(name), do: name

  @doc "A council: the existing module atom for `\"Elixir.Mod\"`, else the binary."
  @spec council(binary | atom) :: module | binary
  def council("Elixir." <> _ = name) do
    String.to_existing_atom(name)
  rescue
    ArgumentError -> name
  end

  def council(name), do: name

  @doc "A run summary as `CouncilEx.RunServer.state/2` returns it."
  @spec summary(map) :: CouncilEx.run_summary()
  def summary(%{} = s) do
    s
    |> Map.update(:council, nil, &council/1)
    |> Map.update(:current_round, nil, &current_round/1)
    |> Map.update(:started_at, nil, &datetime/1)
  end

  def summary(other), do: other

  @doc """
  A run result (`%{final, rounds, errors}`) as the library gives it:
  round names as atoms, members' errors and the run's errors as
  `%CouncilEx.Error{}` (the run's from the wire's `error_info`, which is
  dropped).
  """
  @spec result(term) :: term
  def result(%{rounds: rounds} = r) when is_list(rounds) do
    r = %{r | rounds: Enum.map(rounds, &round_result/1)}

    case Map.pop(r, :error_info) do
      {info, r} when is_list(info) -> %{r | errors: run_errors(r.errors, info)}
      {_, r} -> r
    end
  end

  def result(other), do: other

  defp run_errors(errors, info) when is_list(errors) and length(errors) == length(info) do
    Enum.zip_with(errors, info, fn message, i ->
      %CouncilEx.Error{
        kind: i.kind,
        message: message,
        member_id: i.member_id,
        round_name: i.round_name && round_name(i.round_name)
      }
    end)
  end

  defp run_errors(errors, _info), do: errors

  @doc "A round result with its name as an atom and its members' errors as data."
  @spec round_result(term) :: term
  def round_result(%{name: name} = r) do
    name = round_name(name)
    r = %{r | name: name}

    case r do
      %{members: ms} when is_list(ms) -> %{r | members: Enum.map(ms, &member_result(&1, name))}
      _ -> r
    end
  end

  def round_result(other), do: other

  @doc """
  A member result of round `round` with its error (a binary on the wire)
  as a `%CouncilEx.Error{}`.
  """
  @spec member_result(term, atom | binary) :: term
  def member_result(%{error: message} = m, round) when is_binary(message) do
    error = %CouncilEx.Error{
      kind: m[:error_kind],
      message: message,
      member_id: m[:member_id],
      round_name: round,
      context: %{status: m[:status], attempts: m[:attempts]}
    }

    %{m | error: error}
  end

  def member_result(other, _round), do: other

  @doc "An await/result reply with its results converted."
  @spec reply(term) :: term
  def reply({:ok, result}), do: {:ok, result(result)}

  def reply({:error, {:failed, errors, result}}) do
    result = result(result)
    {:error, {:failed, errors_of(result, errors), result}}
  end

  def reply({:error, {:cancelled, result}}), do: {:error, {:cancelled, result(result)}}
  def reply(other), do: other

  @doc "An event from the C node as subscribers receive it (SPEC section 7)."
  @spec event(tuple) :: tuple
  def event({:run_started, id, council, input}), do: {:run_started, id, council(council), input}
  def event({:round_started, id, name, idx}), do: {:round_started, id, round_name(name), idx}
  def event({:member_started, id, name, m}), do: {:member_started, id, round_name(name), m}

  def event({:member_token, id, name, m, chunk}),
    do: {:member_token, id, round_name(name), m, chunk}

  def event({:member_completed, id, name, m, res}) do
    name = round_name(name)
    {:member_completed, id, name, m, member_result(res, name)}
  end

  def event({:round_completed, id, name, res}),
    do: {:round_completed, id, round_name(name), round_result(res)}

  def event({:tool_call_request, id, name, m, call}),
    do: {:tool_call_request, id, round_name(name), m, call}

  def event({:tool_call_result, id, name, m, call}),
    do: {:tool_call_result, id, round_name(name), m, call}

  def event({:run_completed, id, res}), do: {:run_completed, id, result(res)}

  def event({:run_failed, id, errors, res}) do
    res = result(res)
    {:run_failed, id, errors_of(res, errors), res}
  end

  def event({:run_cancelled, id, res}), do: {:run_cancelled, id, result(res)}
  def event(other), do: other

  # A failed run's errors (the same list as its result's on the wire) as
  # the converted result has them.
  defp errors_of(%{errors: converted}, _errors), do: converted
  defp errors_of(_result, errors), do: errors

  defp current_round(%{name: name} = r), do: %{r | name: round_name(name)}
  defp current_round(other), do: other

  defp datetime(us) when is_integer(us), do: DateTime.from_unix!(us, :microsecond)
  defp datetime(other), do: other
end
