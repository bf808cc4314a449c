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

  @doc "The registry name as the C node sees it (`inspect/1` of an atom, a binary as is)."
  @spec registry_name(atom | binary) :: binary
  def registry_name(name) when is_binary(name), do: name
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

  @doc "A run result (`%{final, rounds, errors}`) with round names as atoms."
  @spec result(term) :: term
  def result(%{rounds: rounds} = r) when is_list(rounds),
    do: %{r | rounds: Enum.map(rounds, &round_result/1)}

  def result(other), do: other

  @doc "A round result with its name as an atom."
  @spec round_result(term) :: term
  def round_result(%{name: name} = r), do: %{r | name: round_name(name)}
  def round_result(other), do: other

  @doc "An await/result reply with its results converted."
  @spec reply(term) :: term
  def reply({:ok, result}), do: {:ok, result(result)}
  def reply({:error, {:failed, errors, result}}), do: {:error, {:failed, errors, result(result)}}
  def reply({:error, {:cancelled, result}}), do: {:error, {:cancelled, result(result)}}
  def reply(other), do: other

  @doc "An event from the C node as subscribers receive it (SPEC section 7)."
  @spec event(tuple) :: tuple
  def event({:run_started, id, council, input}), do: {:run_started, id, council(council), input}
  def event({:round_started, id, name, idx}), do: {:round_started, id, round_name(name), idx}
  def event({:member_started, id, name, m}), do: {:member_started, id, round_name(name), m}

  def event({:member_token, id, name, m, chunk}),
    do: {:member_token, id, round_name(name), m, chunk}

  def event({:member_completed, id, name, m, res}),
    do: {:member_completed, id, round_name(name), m, res}

  def event({:round_completed, id, name, res}),
    do: {:round_completed, id, round_name(name), round_result(res)}

  def event({:tool_call_request, id, name, m, call}),
    do: {:tool_call_request, id, round_name(name), m, call}

  def event({:tool_call_result, id, name, m, call}),
    do: {:tool_call_result, id, round_name(name), m, call}

  def event({:run_completed, id, res}), do: {:run_completed, id, result(res)}
  def event({:run_failed, id, errors, res}), do: {:run_failed, id, errors, result(res)}
  def event({:run_cancelled, id, res}), do: {:run_cancelled, id, result(res)}
  def event(other), do: other

  defp current_round(%{name: name} = r), do: %{r | name: round_name(name)}
  defp current_round(other), do: other

  defp datetime(us) when is_integer(us), do: DateTime.from_unix!(us, :microsecond)
  defp datetime(other), do: other
end
