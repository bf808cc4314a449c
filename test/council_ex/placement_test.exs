defmodule CouncilEx.Pool.PlacementTest do
  # The pool's placement as pure functions: no node involved (both passes).
  use ExUnit.Case, async: true
  doctest CouncilEx.Pool.Placement

  alias CouncilEx.Pool.Placement

  @nodes [:n1@h, :n2@h, :n3@h]

  defp ids(n), do: for(i <- 1..n, do: "run-#{i}")

  test "every node gets a share of the ids; the order does not depend on the list's" do
    counts = Enum.frequencies_by(ids(3_000), &Placement.owner(&1, @nodes))
    assert Enum.sort(Map.keys(counts)) == Enum.sort(@nodes)
    # 1000 expected each; 700 is more than 10 standard deviations away
    assert Enum.all?(Map.values(counts), &(&1 > 700))

    for id <- ids(200) do
      assert Placement.rank(id, @nodes) == Placement.rank(id, Enum.reverse(@nodes))
      assert hd(Placement.rank(id, @nodes)) == Placement.owner(id, @nodes)
    end
  end

  test "a node that leaves moves only its own ids, each to the next node of its order" do
    [gone | rest] = @nodes

    for id <- ids(1_000) do
      before = Placement.owner(id, @nodes)
      now = Placement.owner(id, rest)

      if before == gone,
        do: assert(now == Enum.at(Placement.rank(id, @nodes), 1)),
        else: assert(now == before)
    end
  end

  test "a node that joins takes ids only for itself" do
    added = :n4@h

    for id <- ids(1_000) do
      now = Placement.owner(id, [added | @nodes])
      assert now == added or now == Placement.owner(id, @nodes)
    end
  end

  test "owner/2 of no node, of one node" do
    assert Placement.owner("x", []) == nil
    assert Placement.owner("x", [:a@h]) == :a@h
  end

  test "least_loaded/1: fewest runs, ties to the first listed" do
    assert Placement.least_loaded([]) == nil
    assert Placement.least_loaded([{:a, 2}, {:b, 2}]) == :a
    assert Placement.least_loaded([{:a, 2}, {:b, 0}, {:c, 1}]) == :b
  end

  test "id_for/4 makes an id whose first node is the one asked for" do
    counter = :counters.new(1, [])

    gen = fn ->
      :counters.add(counter, 1, 1)
      "gen-#{:counters.get(counter, 1)}"
    end

    for node <- @nodes do
      id = Placement.id_for(node, @nodes, gen)
      assert Placement.owner(id, @nodes) == node
    end

    # with one try, the first id whatever its node
    assert Placement.id_for(:n1@h, @nodes, fn -> "fixed" end, 1) == "fixed"
  end
end

defmodule CouncilEx.Pool.ConfigTest do
  # Which nodes the configuration names (CouncilEx.Node.pool_config/0),
  # read from the application env; no node is started here.
  use ExUnit.Case, async: false

  @keys [:node, :nodes, :pool_size]

  setup do
    saved = for k <- @keys, do: {k, Application.fetch_env(:council_ex, k)}
    for k <- @keys, do: Application.delete_env(:council_ex, k)

    on_exit(fn ->
      for {k, v} <- saved do
        case v do
          {:ok, value} -> Application.put_env(:council_ex, k, value)
          :error -> Application.delete_env(:council_ex, k)
        end
      end
    end)
  end

  defp config(env) do
    for {k, v} <- env, do: Application.put_env(:council_ex, k, v)
    CouncilEx.Node.pool_config()
  end

  test "one managed node by default; node:, nodes: and pool_size: as documented" do
    assert config([]) == [:managed]
    assert config(node: :c@h) == [{:external, :c@h}]
    Application.delete_env(:council_ex, :node)
    assert config(nodes: [:a@h, :b@h, :a@h]) == [{:external, :a@h}, {:external, :b@h}]
    Application.delete_env(:council_ex, :nodes)
    assert config(pool_size: 3) == [:managed, :managed, :managed]
  end

  test "a bad or ambiguous configuration is an ArgumentError that says what to fix" do
    for env <- [
          [node: :a@h, pool_size: 2],
          [nodes: [:a@h], pool_size: 2],
          [nodes: []],
          [nodes: [:a@h, "b@h"]],
          [nodes: [:nohost]],
          [node: "a@h"],
          [pool_size: 0],
          [pool_size: :three]
        ] do
      for k <- @keys, do: Application.delete_env(:council_ex, k)
      assert_raise ArgumentError, ~r/config :council_ex/, fn -> config(env) end
    end
  end
end
