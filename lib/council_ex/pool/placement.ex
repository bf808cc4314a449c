defmodule CouncilEx.Pool.Placement do
  @moduledoc """
  Where a run of a pool of C nodes goes, as pure functions (no process,
  no I/O): rendezvous hashing by run id, and the choice of a least-loaded
  node.

  **Rendezvous (highest random weight) hashing.** Each node gets a score
  for a run id, `:erlang.phash2({node, run_id}, 2^32)`; the nodes ranked
  by score (highest first, ties by name) are the id's order of
  preference. A run goes to the first node of that order that takes new
  runs, and a lookup by id asks the first node that is up. The score
  depends on the node's name and the id only, so every BEAM node that
  knows the same node names ranks them the same way (`phash2/2` is the
  same on every OTP release and platform), without talking to the others;
  a node leaving moves only its own ids (each to its next node in the
  order), and a node coming back (or added) takes back about 1/N of the
  ids, no others.

      iex> nodes = [:"a@h", :"b@h", :"c@h"]
      iex> [first | _] = CouncilEx.Pool.Placement.rank("run-1", nodes)
      iex> first == CouncilEx.Pool.Placement.owner("run-1", nodes)
      true
      iex> CouncilEx.Pool.Placement.rank("run-1", Enum.reverse(nodes)) ==
      ...>   CouncilEx.Pool.Placement.rank("run-1", nodes)
      true
  """

  @range 4_294_967_296

  @doc "The nodes in `run_id`'s order of preference (highest score first)."
  @spec rank(binary, [node]) :: [node]
  def rank(run_id, nodes) when is_binary(run_id) and is_list(nodes) do
    nodes
    |> Enum.map(&{-score(&1, run_id), &1})
    |> Enum.sort()
    |> Enum.map(&elem(&1, 1))
  end

  @doc "The first node of `run_id`'s order among `nodes`, or nil when there is none."
  @spec owner(binary, [node]) :: node | nil
  def owner(_run_id, []), do: nil
  def owner(_run_id, [node]), do: node

  def owner(run_id, [first | rest]) do
    {_, node} =
      Enum.reduce(rest, {score(first, run_id), first}, fn node, {best, _} = acc ->
        s = score(node, run_id)
        if s > best or (s == best and node < elem(acc, 1)), do: {s, node}, else: acc
      end)

    node
  end

  @doc "The score of `node` for `run_id` (higher is preferred)."
  @spec score(node, binary) :: non_neg_integer
  def score(node, run_id), do: :erlang.phash2({node, run_id}, @range)

  @doc """
  The node with the fewest live runs in `loads` (`{node, runs_alive}`
  pairs), ties to the first listed; nil for an empty list.

      iex> CouncilEx.Pool.Placement.least_loaded([{:a, 4}, {:b, 1}, {:c, 1}])
      :b
  """
  @spec least_loaded([{node, non_neg_integer}]) :: node | nil
  def least_loaded([]), do: nil

  def least_loaded(loads) do
    {node, _} = Enum.min_by(loads, &elem(&1, 1), fn -> {nil, 0} end)
    node
  end

  @doc """
  A fresh run id (from `generate`, called again until one fits) whose
  first node among `nodes` is `node`, so that a lookup by that id goes
  straight to `node`: how a least-loaded placement stays findable by
  hashing. With N nodes an id fits with probability 1/N; after `tries`
  misses the last id is returned anyway (it is then found by the lookup's
  fallback, see `CouncilEx.Pool`).
  """
  @spec id_for(node, [node], (() -> binary), pos_integer) :: binary
  def id_for(node, nodes, generate, tries \\ 256) do
    id = generate.()

    cond do
      owner(id, nodes) == node -> id
      tries <= 1 -> id
      true -> id_for(node, nodes, generate, tries - 1)
    end
  end
end
