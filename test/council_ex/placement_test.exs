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
