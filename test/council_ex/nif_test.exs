defmodule CouncilEx.NifTest do
  # The core as a NIF in this VM (CouncilEx.Nif): runs, events and outcomes
  # in the same terms as the C node's, no scheduler blocked.
  use ExUnit.Case, async: true
  doctest CouncilEx.Nif

  alias CouncilEx.Nif

  @spec3 ~s({"id":"nif","members":[{"id":"a","provider":"mock","options":{"chunks":3}},
             {"id":"b","provider":"mock","options":{"vote":"A"}},{"id":"c","provider":"mock"}],
             "rounds":[{"type":"independent_analysis"},{"type":"vote"}],"chair":"a"})
  @slow ~s({"id":"slow","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],
            "rounds":[{"type":"independent_analysis"}]})

  defp events(acc \\ []) do
    receive do
      {t, _, _} = e when t in [:run_completed, :run_cancelled] -> Enum.reverse([e | acc])
      {:run_failed, _, _, _} = e -> Enum.reverse([e | acc])
      e when is_tuple(e) and is_atom(elem(e, 0)) -> events([e | acc])
    after
      10_000 -> flunk("no terminal event: #{inspect(Enum.reverse(acc))}")
    end
  end

  test "a run streams its events to subscribers and awaits its outcome" do
    id = "nif-#{System.unique_integer([:positive])}"
    input = {:question, "2+2?"}
    assert {:ok, ^id} = Nif.start(@spec3, input, run_id: id, subscribe: [self()])
    evs = events()
    assert [{:run_started, ^id, "nif", ^input} | _] = evs
    assert length(for {:member_token, ^id, "independent_analysis", "a", _} <- evs, do: 1) == 3
    assert {:run_completed, ^id, %{final: final, rounds: rounds, errors: [], usage: _}} =
             List.last(evs)
    assert is_binary(final) and length(rounds) == 3
    assert {:ok, %{final: ^final}} = Nif.await(id)
    assert {:ok, %{status: :completed, run_id: ^id, rounds_completed: 3}} = Nif.state(id)
    assert {:error, :already_started} = Nif.start(@spec3, "again", run_id: id)
  end

  test "await answers when a running run ends; cancel ends it" do
    {:ok, id} = Nif.start(@slow, "q")
    assert {:ok, %{status: :running}} = Nif.state(id)
    waiter = Task.async(fn -> Nif.await(id) end)
    assert :ok = Nif.subscribe(id)
    assert :ok = Nif.cancel(id)
    assert {:error, {:cancelled, %{rounds: []}}} = Task.await(waiter)
    assert_receive {:run_cancelled, ^id, _}
    assert :ok = Nif.cancel(id)
  end

  test "bad requests get clear errors" do
    assert {:error, :invalid_spec} = Nif.start("{not json", "q")
    assert {:error, :invalid_spec} = Nif.start(~s({"id":"x","members":[],"rounds":[]}), "q")
    assert {:error, :unknown_provider} =
             Nif.start(~s({"id":"x","members":[{"id":"a","provider":"beam"}],
                          "rounds":[{"type":"vote"}]}), "q")
    assert {:error, :not_found} = Nif.await("no-such-run")
    assert {:error, :not_found} = Nif.state("no-such-run", registry: "other")
    assert {:error, :badarg} = Nif.start(@spec3, "q", run_id: "x1", subscribe: [:not_a_pid])
    assert {:error, :not_found} = Nif.state("x1") # refused whole: no run was made
  end

  test "many processes run councils at once" do
    tasks =
      for i <- 1..200 do
        Task.async(fn ->
          {:ok, id} = Nif.start(@spec3, "q#{i}")
          Nif.await(id)
        end)
      end

    assert Enum.all?(Task.await_many(tasks, 30_000), &match?({:ok, %{final: _}}, &1))
  end
end
