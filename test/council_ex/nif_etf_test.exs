defmodule CouncilEx.NifEtfTest do
  # The NIF's decoder of its own ETF (nif_etf_own, c_src/nif/nif_term.c):
  # the term of every shape must be exactly what enif_binary_to_term
  # makes of the same bytes, on the loop thread and on a scheduler that
  # drives the core inline. Not async: the self-check and {inline, false}
  # are the library's, not a test's.
  use ExUnit.Case, async: false
  @moduletag :nif_only

  alias CouncilEx.Nif
  import CouncilEx.Test.Helpers, only: [run_events: 1, run_id: 1]

  @reg "CouncilEx.Runner.Registry"
  @council ~s({"id":"etf","members":[{"id":"a","provider":"mock","options":{"chunks":2}},
               {"id":"b","provider":"mock","options":{"vote":"A"}},
               {"id":"c","provider":"mock","options":{"fail_attempts":[1,2,3,4,5]}}],
               "rounds":[{"type":"independent_analysis"},{"type":"peer_review"},{"type":"vote"}],
               "chair":"a"})
  @failing ~s({"id":"etf_f","members":[{"id":"x","provider":"mock","options":{"fail_attempts":[1]}}],
               "rounds":[{"type":"independent_analysis"}]})

  # integers around the edges of small (60-bit) integers, 32 and 64 bits
  @ints [0, 1, 255, 256, -1, -256, 2 ** 27 - 1, -(2 ** 27), 2 ** 31 - 1, -(2 ** 31), 2 ** 31,
         -(2 ** 31) - 1, 2 ** 59 - 1, 2 ** 59, -(2 ** 59), -(2 ** 59) - 1, 2 ** 63 - 1, 2 ** 63,
         -(2 ** 63), -(2 ** 63) - 1, 2 ** 64 - 1, 2 ** 64, -(2 ** 64) + 1, -(2 ** 64), 2 ** 200,
         -(2 ** 200)]

  defp shapes do
    big = Map.new(1..40, fn i -> {:"key_#{i}", i} end)
    bin_keys = Map.new(1..33, fn i -> {"k#{i}", [i, "v#{i}"]} end)

    %{
      ints: @ints,
      floats: [0.0, -0.0, 1.5, -2.5e-308, 1.7976931348623157e308, 5.0e-324, 3.141592653589793],
      atoms: [:ok, :"héllo", :"Elixir.Foo.Bar", true, false, nil, :"a b", :""],
      binaries: ["", "héllo 日本語 ✓", <<0, 255, 1>>, String.duplicate("x", 100), <<1::size(3)>>],
      lists: [[], [1, [2, [3, []]]], ~c"charlist", [1 | 2], [:a | :b], Enum.to_list(1..300)],
      tuples: [{}, {1}, List.to_tuple(Enum.to_list(1..300)), {:a, {:b, {:c, %{}}}}],
      big_maps: [big, bin_keys, %{nested: big, list: [big, bin_keys]}, Map.put(big, big, big)],
      maps: %{1 => 2, "s" => :s, {:t} => [3.0], [] => %{}},
      others: [self(), make_ref(), &Enum.map/2, fn -> :ok end, :erlang.list_to_port(~c"#Port<0.1>")]
    }
  end

  # atoms past Latin-1: a run's input cannot hold them (the start prints
  # the input for members with ei, which refuses them)
  @wide [:"日本語", :"ü✓", {:"日本語", %{"日本語": 1}}]

  # how: :ok (the fast walk) or :whole (what it leaves to the whole-term
  # path)
  defp same(bin, how) do
    want = :erlang.binary_to_term(bin)
    got = Nif.etf_test({:decode, bin})
    assert match?({:ok, _, ^how}, got), "#{inspect(got)} from #{inspect(bin)}: #{inspect(want)}"
    assert elem(got, 1) === want
  end

  test "the fast walk gives binary_to_term's term for every shape, in each encoding" do
    s = shapes()
    terms = [s, @wide | Map.values(s)] ++ Enum.flat_map([@wide | Map.values(s)], &List.wrap/1)

    for t <- terms, opts <- [[], [minor_version: 0], [minor_version: 1]] do
      same(:erlang.term_to_binary(t, opts), :ok)
    end
  end

  test "the fast walk refuses what is not one whole term" do
    bin = :erlang.term_to_binary(shapes())
    # ETF is self-delimiting: no proper prefix of a term is a whole term
    for n <- 0..(byte_size(bin) - 1), do: assert(Nif.etf_test({:decode, binary_part(bin, 0, n)}) == :error)
    assert Nif.etf_test({:decode, bin <> <<0>>}) == :error
    # a tag no term has, a list longer than its bytes, a NaN, a map with a
    # key twice, nesting past the walk's depth
    for bad <- [<<131, 255>>, <<131, 108, 0xFF, 0xFF, 0xFF, 0xFF, 106>>,
                <<131, 70, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0>>,
                <<131, 116, 0, 0, 0, 2, 97, 1, 97, 2, 97, 1, 97, 3>>],
        do: assert(Nif.etf_test({:decode, bad}) == :error)

    # nesting past the fast walk's depth: the whole-term path's
    deep = <<131>> <> :binary.copy(<<104, 1>>, 300) <> <<106>>
    same(deep, :whole)
  end

  # a council with a member that fails (errors in its result) and a run
  # that fails, their events, state, results and exits
  defp runs(input) do
    for spec <- [@council, @failing] do
      id = run_id("etf")
      {:ok, pid} = Nif.start(%{spec: spec, input: input, run_id: id, subscribe: [self()]})
      ref = Process.monitor(pid)
      # the run pid's :state while the run goes on (it may have ended)
      try do
        assert {:ok, %{run_id: ^id}} = GenServer.call(pid, :state)
      catch
        :exit, _ -> :ended
      end

      evs = run_events(id)
      assert [{:run_started, ^id, _, got} | _] = evs
      assert got === input
      assert {_, _} = Nif.call({:result, @reg, id})
      assert {:ok, %{run_id: ^id}} = Nif.call({:state, @reg, id})
      assert_receive {:DOWN, ^ref, :process, ^pid, _}, 10_000
      evs
    end
  end

  defp counts, do: Nif.etf_test(:counts)

  test "events, results, states and exits of real runs: the same terms on the loop thread and inline" do
    input = shapes()
    :ok = Nif.etf_test({:check, true})

    try do
      # the loop thread decodes everything
      :ok = Nif.call({:inline, false})
      queued = runs(input)
      :ok = Nif.call({:inline, true})
      assert %{loop: loop, scheduler: 0, mismatched: 0, fallbacks: 0} = counts()
      assert loop > 0

      # NIF calls that find the core free drive it (the loop thread may
      # hold it at that moment: then again)
      inline =
        Enum.find_value(1..20, fn _ ->
          evs = runs(input)
          if counts().scheduler > 0, do: evs
        end)

      assert inline, "no decode on a scheduler"
      assert %{mismatched: 0, fallbacks: 0} = counts()
      # a result with a member's errors, a failed run's
      assert [{:run_completed, _, %{errors: [_ | _]}}, {:run_failed, _, [_ | _], _}] =
               Enum.map(queued, &List.last/1)

      assert Enum.map(inline, &length/1) == Enum.map(queued, &length/1)
    after
      Nif.etf_test({:check, false})
      Nif.call({:inline, true})
    end
  end
end
