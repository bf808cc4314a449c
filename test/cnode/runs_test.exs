# Council runs served by the C node, seen from a real BEAM node: every run a
# pid that GenServer.call, monitors, links and exit signals treat like a
# GenServer (docs/protocol.md).
Code.require_file("support.exs", __DIR__)

defmodule CNode.RunsTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @members [%{id: "a", provider: "mock", options: %{latency_ms: 20, chunks: 2}},
            %{id: "b", provider: "mock"}, %{id: "c", provider: "mock"}]

  def spec(extra \\ %{}) do
    Map.merge(%{id: "demo", members: @members,
                rounds: [%{type: "independent_analysis"}, %{type: "anonymized_peer_review"},
                         %{type: "vote"}],
                chair: "a"}, extra)
  end

  # The demo council with member "a" (also the chair) served by a member
  # server of this test: start it with `member_server: gated_server()`.
  # The run cannot end before the test sends :go to that server, so a
  # monitor set after the start reply is always in place before the end,
  # however slow the machine (a latency would only make that likely).
  def gated_spec(extra \\ %{}) do
    members = [%{id: "a", provider: "beam", options: %{module: "Echo"}} | tl(@members)]
    spec(Map.merge(%{members: members}, extra))
  end

  # A member server that answers (echo) only after :go.
  defp gated_server, do: spawn(fn -> receive do :go -> member_server() end end)

  def slow_spec, do: %{id: "slow", members: [%{id: "a", provider: "mock", options: %{latency_ms: 600_000}}],
                       rounds: [%{type: "independent_analysis"}]}

  def start(node, opts, op \\ :start),
    do: GenServer.call({:council_ex, node}, {op, Map.merge(%{input: "What is 2+2?"}, opts)})


  setup_all do
    info = start_node()
    on_exit(fn -> stop_node(info) end)
    {:ok, info: info}
  end

  test "a run completes and its subscriber sees every event in order", %{info: i} do
    input = {:question, "What is 2+2?", [1, 2]}
    {:ok, pid} = start(i.node, %{spec: spec(), input: input, subscribe: [self()]})
    assert node(pid) == i.node
    evs = events()
    assert is_list(evs)
    assert [{:run_started, run_id, "demo", ^input} | _] = evs
    assert is_binary(run_id) and byte_size(run_id) == 22
    assert {:run_completed, ^run_id, %{final: final, rounds: rounds, errors: []}} = List.last(evs)
    assert is_binary(final)
    # three rounds and the chair's synthesis, strictly ordered
    assert length(rounds) == 4
    round_marks = for {t, _, name, _} <- evs, t in [:round_started, :round_completed], do: {t, name}
    names = for %{name: n} <- rounds, do: n
    assert round_marks == Enum.flat_map(names, &[round_started: &1, round_completed: &1])
    assert Enum.take(names, 3) == ["independent_analysis", "anonymized_peer_review", "vote"]
    # each member's own events in order within a round
    for {:member_completed, _, round, m, res} <- evs do
      assert %{member_id: ^m, status: :ok, attempts: 1} = res
      assert Enum.find_index(evs, &match?({:member_started, _, ^round, ^m}, &1)) <
               Enum.find_index(evs, &match?({:member_completed, _, ^round, ^m, _}, &1))
    end
    assert Enum.count(evs, &(elem(&1, 0) in [:run_completed, :run_failed, :run_cancelled])) == 1
    {:round_completed, _, "vote", vote} = Enum.find(evs, &match?({:round_completed, _, "vote", _}, &1))
    assert %{"tally" => tally, "winner" => w} = vote.aggregate
    assert is_map(tally) and is_binary(w)
  end

  test "GenServer.call on a run pid: run_id, state, result, unknown call", %{info: i} do
    {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "call-me"})
    assert GenServer.call(pid, :run_id) == "call-me"
    assert {:ok, %{run_id: "call-me", council: "slow", status: :running,
                   current_round: %{name: "independent_analysis", idx: 0},
                   rounds_completed: 0, started_at: t}} = GenServer.call(pid, :state)
    assert is_integer(t) and t > 1_600_000_000_000_000
    assert GenServer.call(pid, :result) == {:error, :running}
    assert GenServer.call(pid, {:bogus, 1}) == {:error, {:unknown_call, :bogus}}
    big = {:big, :crypto.strong_rand_bytes(1_000_000)}
    assert GenServer.call(pid, big, 60_000) == {:error, {:unknown_call, :big}}
    assert :sys.get_state(pid).status == :running
    assert GenServer.call(pid, :cancel) == :ok
  end

  test "monitors get DOWN :normal on completion, {:shutdown, :cancelled} on cancel", %{info: i} do
    server = gated_server()
    {:ok, pid} = start(i.node, %{spec: gated_spec(), member_server: server})
    ref = Process.monitor(pid)
    send(server, :go)
    assert {:ok, %{final: _}} = GenServer.call(pid, :await, 30_000)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000

    {:ok, pid2} = start(i.node, %{spec: slow_spec()})
    ref2 = Process.monitor(pid2)
    assert GenServer.call(pid2, :cancel) == :ok
    assert_receive {:DOWN, ^ref2, :process, ^pid2, {:shutdown, :cancelled}}, 10_000
    # already gone: :noproc, and a call exits :noproc at once (not after
    # its 30 s timeout; a wide margin for a loaded machine)
    ref3 = Process.monitor(pid2)
    assert_receive {:DOWN, ^ref3, :process, ^pid2, :noproc}, 10_000
    {t, res} = :timer.tc(fn -> catch_exit(GenServer.call(pid2, :state, 30_000)) end)
    assert {:noproc, _} = res
    assert t < 10_000_000
  end

  test "await of a cancelled run, and the service's whereis/state/cancel", %{info: i} do
    reg = "Tenant#{System.unique_integer([:positive])}"
    {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "r1", registry: reg})
    svc = {:council_ex, i.node}
    assert GenServer.call(svc, {:whereis, reg, "r1"}) == {:ok, pid}
    assert GenServer.call(svc, {:whereis, "OtherRegistry", "r1"}) == {:error, :unknown_run}
    assert {:ok, %{status: :running, registry: ^reg}} = GenServer.call(svc, {:state, reg, "r1"})
    assert GenServer.call(svc, {:state, reg, "nope"}) == {:error, :not_found}
    assert start(i.node, %{spec: slow_spec(), run_id: "r1", registry: reg}) ==
             {:error, {:already_started, pid}}
    assert start(i.node, %{spec: slow_spec(), run_id: "r1", registry: reg}, :start_link) ==
             {:error, {:already_started, pid}}
    assert stats(i.node).links == 0
    task = Task.async(fn -> GenServer.call(pid, :await, 30_000) end)
    # the await is sent before the cancel (a run already gone would exit
    # the await :noproc)
    assert wait_calling(task.pid)
    assert GenServer.call(svc, {:cancel, reg, "r1"}) == :ok
    assert {:error, {:cancelled, %{rounds: _}}} = Task.await(task, 30_000)
    # ended: no one's from then on (unknown_run), still readable by state;
    # its id stays taken while it is retained, with no pid to give
    assert GenServer.call(svc, {:whereis, reg, "r1"}) == {:error, :unknown_run}
    assert {:ok, %{status: :cancelled}} = GenServer.call(svc, {:state, reg, "r1"})
    assert start(i.node, %{spec: slow_spec(), run_id: "r1", registry: reg}) ==
             {:error, :run_id_retained}
    assert GenServer.call(svc, {:cancel, reg, "ghost"}) == {:error, :not_found}
  end

  test "result by id stays readable in retention; tagged subscriptions carry the topic", %{info: i} do
    svc = {:council_ex, i.node}
    run_id = "tagged-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> run_id
    # subscribing before the run exists is allowed: nothing is missed
    assert GenServer.call(svc, {:subscribe, topic, self(), :tagged}) == :ok
    assert GenServer.call(svc, {:subscribe, topic, self(), :bogus}) == {:error, :badarg}
    server = gated_server()
    {:ok, pid} = start(i.node, %{spec: gated_spec(), run_id: run_id, member_server: server})
    ref = Process.monitor(pid)
    send(server, :go)
    assert_receive {:council_ex_event, ^topic, {:run_started, ^run_id, "demo", _}}, 10_000
    assert_receive {:council_ex_event, ^topic, {:run_completed, ^run_id, %{final: f}}}, 30_000
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000
    reg = "CouncilEx.Runner.Registry"
    assert {:ok, %{final: ^f}} = GenServer.call(svc, {:result, reg, run_id})
    assert GenServer.call(svc, {:result, reg, "no-such-run"}) == {:error, :not_found}
  end

  test "a sub-council topic keeps its subscribers across nested runs; {pid, :tagged} at start", %{info: i} do
    inner = %{id: "inner", members: [%{id: "x", provider: "mock"}, %{id: "y", provider: "mock"}],
              rounds: [%{type: "independent_analysis"}]}
    outer = %{id: "outer",
              members: [%{id: "panel", provider: "council", options: %{spec: inner}},
                        %{id: "b", provider: "mock"}],
              rounds: [%{type: "independent_analysis"}, %{type: "peer_review"}]}
    run_id = "parent-#{System.unique_integer([:positive])}"
    topic = "council_ex:run:" <> run_id
    sub = topic <> ":sub:panel"
    assert GenServer.call({:council_ex, i.node}, {:subscribe, sub, self()}) == :ok
    {:ok, _} = start(i.node, %{spec: outer, run_id: run_id, subscribe: [{self(), :tagged}]})
    assert_receive {:council_ex_event, ^topic, {:run_completed, ^run_id, _}}, 30_000
    # the panel member ran in both rounds: two nested runs, both seen
    assert_receive {:run_completed, n1, _} when n1 != run_id, 10_000
    assert_receive {:run_completed, n2, _} when n2 not in [run_id, n1], 10_000
    # and no third: a run of our own whose topic is the sub-council's comes
    # through the same subscription, whose events arrive in publish order,
    # so anything published there before it has arrived by its end
    marker = run_id <> ":sub:panel"
    {:ok, _} = start(i.node, %{spec: inner, run_id: marker})
    assert_receive {:run_completed, ^marker, _}, 10_000
    refute_received {:run_completed, _, _}
    assert GenServer.call({:council_ex, i.node}, {:unsubscribe, sub, self()}) == :ok
  end

  test "--max-subscriptions bounds a node's subscriptions: {:error, :limit}, nothing else breaks" do
    small = start_node(args: ["--max-subscriptions", "2"])
    svc = {:council_ex, small.node}
    assert GenServer.call(svc, {:subscribe, "council_ex:run:t1", self()}) == :ok
    assert GenServer.call(svc, {:subscribe, "council_ex:run:t2", self()}) == :ok
    assert GenServer.call(svc, {:subscribe, "council_ex:run:t3", self()}) == {:error, :limit}
    # the same pair again is not a new subscription
    assert GenServer.call(svc, {:subscribe, "council_ex:run:t1", self()}) == :ok
    assert GenServer.call(svc, {:unsubscribe, "council_ex:run:t2", self()}) == :ok
    assert GenServer.call(svc, {:subscribe, "council_ex:run:t3", self()}) == :ok
    assert stats(small.node).subscriptions == 2
    assert stop_node(small) == 0
  end

  test "a failing run ends with run_failed and {:shutdown, {:failed, errors}}", %{info: i} do
    failing = %{id: "f", members: [%{id: "a", provider: "mock", options: %{fail_attempts: [1, 2, 3]}}],
                rounds: [%{type: "independent_analysis"}], limits: %{max_attempts: 2, backoff_ms: 1}}
    # start_link: the link exists before the reply, so the exit signal
    # cannot be missed however fast the run fails (a monitor set after the
    # reply could find the run gone: :noproc).
    Process.flag(:trap_exit, true)
    {:ok, pid} = start(i.node, %{spec: failing, subscribe: [self()]}, :start_link)
    evs = events()
    assert {:run_failed, _, [_ | _] = errors, %{errors: errors, error_info: info}} = List.last(evs)
    assert_receive {:EXIT, ^pid, {:shutdown, {:failed, ^errors}}}, 10_000
    Process.flag(:trap_exit, false)
    # each error as data: a's failure, then its round's
    assert [%{kind: :transient, member_id: "a", round_name: "independent_analysis"},
            %{kind: :transient, member_id: nil, round_name: "independent_analysis"}] = info
    assert [%{rounds: [%{members: [%{status: :error, attempts: 2}]}]}] =
             for({:run_failed, _, _, r} <- evs, do: r)
  end

  test "{:validate, spec}: :ok, or the refusal a start would get", %{info: i} do
    svc = {:council_ex, i.node}
    good = %{id: "v", members: @members, rounds: [%{type: "vote"}]}
    assert :ok = GenServer.call(svc, {:validate, good})
    assert :ok = GenServer.call(svc, {:validate, {:json, ~s({"id":"v","members":[{"id":"a","provider":"mock"}],"rounds":[{"type":"vote"}]})}})
    bad = %{good | rounds: [%{type: "vote", options: %{failure_mode: "maybe"}}]}
    assert {:error, {:invalid_spec, "rounds[0].options.failure_mode", _}} =
             GenServer.call(svc, {:validate, bad})
    assert {:error, {:invalid_spec, "members[0].provider", _}} =
             GenServer.call(svc, {:validate, %{good | members: [%{id: "a", provider: "nope"}]}})
    assert {:error, {:invalid_spec, "$", _}} = GenServer.call(svc, {:validate, "{not json"})
    assert {:error, {:invalid_spec, "spec", _}} = GenServer.call(svc, {:validate, {:tuple}})
    huge = %{good | members: [%{id: "a", provider: "mock", options: %{text: String.duplicate("x", 1_100_000)}}]}
    assert {:error, :request_too_large} = GenServer.call(svc, {:validate, huge})
    assert {:error, {:unknown_call, _}} = GenServer.call(svc, {:validate, good, :extra})
  end

  test "bad requests get error tuples and the node keeps serving", %{info: i} do
    assert {:error, {:invalid_spec, "rounds[0].type", msg}} =
             start(i.node, %{spec: %{id: "x", members: @members, rounds: [%{type: "dance"}]}})
    assert is_binary(msg)
    assert {:error, {:invalid_spec, _, _}} = start(i.node, %{spec: "{not json"})
    assert {:error, {:invalid_spec, "spec", _}} = start(i.node, %{spec: {:tuple, :not, :json}})
    assert start(i.node, %{spec: spec(), bogus: 1}) == {:error, {:bad_option, :bogus}}
    assert GenServer.call({:council_ex, i.node}, {:start, %{input: 1}}) ==
             {:error, {:bad_option, :spec}}
    assert GenServer.call({:council_ex, i.node}, {:start, :not_a_map}) == {:error, :badarg}
    assert GenServer.call({:council_ex, i.node}, {:whereis, 1, 2}) == {:error, :badarg}
    assert GenServer.call({:council_ex, i.node}, :ping) == :pong
  end

  test "start_link: the caller's death cancels the run", %{info: i} do
    parent = self()
    caller = spawn(fn ->
      {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "linked"}, :start_link)
      send(parent, {:run, pid})
      Process.sleep(:infinity)
    end)
    assert_receive {:run, pid}, 15_000
    ref = Process.monitor(pid)
    Process.exit(caller, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}, 10_000
    assert {:ok, %{status: :cancelled}} =
             GenServer.call({:council_ex, i.node}, {:state, "CouncilEx.Runner.Registry", "linked"})
  end

  # As a GenServer that stops in terminate/2: an exit signal cancels the
  # run with its reason; the subscriber (on the same connection as the
  # signals) gets run_cancelled before the DOWN and the EXIT.
  test "exit signals (shutdown from a linked parent, Process.exit/2, kill, normal) and GenServer.stop", %{info: i} do
    Process.flag(:trap_exit, true)
    svc = {:council_ex, i.node}
    {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "sig1", subscribe: [self()]}, :start_link)
    assert_receive {:run_started, "sig1", _, _}
    ref = Process.monitor(pid)
    Process.exit(pid, :shutdown)
    assert [{:run_cancelled, "sig1", %{rounds: _}} | signals] =
             wait_messages(3, &(elem(&1, 0) in [:run_cancelled, :DOWN, :EXIT]))
    assert Enum.sort(signals) ==
             Enum.sort([{:DOWN, ref, :process, pid, :shutdown}, {:EXIT, pid, :shutdown}])
    flush_messages()
    assert {:ok, %{status: :cancelled}} =
             GenServer.call(svc, {:state, "CouncilEx.Runner.Registry", "sig1"})

    # the way a supervisor terminates a child: monitor, unlink, exit
    {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "sig2", subscribe: [self()]}, :start_link)
    assert_receive {:run_started, "sig2", _, _}
    ref = Process.monitor(pid)
    Process.unlink(pid)
    Process.exit(pid, {:shutdown, :tenant_gone})
    assert_receive {:run_cancelled, "sig2", _}
    assert_receive {:DOWN, ^ref, :process, ^pid, {:shutdown, :tenant_gone}}
    refute_received {:EXIT, ^pid, _}

    # GenServer.stop: the same order (the stop's caller waits for the DOWN)
    {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "sig4", subscribe: [self()]})
    assert_receive {:run_started, "sig4", _, _}
    ref = Process.monitor(pid)
    assert GenServer.stop(pid, :bye, 30_000) == :ok

    assert [{:run_cancelled, "sig4", _}, {:DOWN, ^ref, :process, ^pid, :bye}] =
             wait_messages(2, &(elem(&1, 0) in [:run_cancelled, :DOWN]))

    flush_messages()
    assert {:ok, %{status: :cancelled}} =
             GenServer.call(svc, {:state, "CouncilEx.Runner.Registry", "sig4"})

    # normal is ignored; kill ends it at once, the run cancelled after
    {:ok, pid} = start(i.node, %{spec: slow_spec(), run_id: "sig3", subscribe: [self()]})
    assert_receive {:run_started, "sig3", _, _}
    ref = Process.monitor(pid)
    Process.exit(pid, :normal)
    assert {:ok, %{status: :running}} = GenServer.call(pid, :state)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
    assert_receive {:run_cancelled, "sig3", _}
    Process.flag(:trap_exit, false)
  end

  # The messages in the mailbox that pass `keep?`, in order, once there
  # are n, without taking them.
  defp wait_messages(n, keep?) do
    kept = fn -> Enum.filter(elem(Process.info(self(), :messages), 1), keep?) end
    assert wait_until(fn -> length(kept.()) >= n end)
    kept.()
  end

  defp flush_messages do
    receive do
      _ -> flush_messages()
    after
      0 -> :ok
    end
  end

  test "a trapping start_link caller gets the exit signal of a cancelled run", %{info: i} do
    Process.flag(:trap_exit, true)
    {:ok, pid} = start(i.node, %{spec: slow_spec()}, :start_link)
    GenServer.cast(pid, :cancel)
    assert_receive {:EXIT, ^pid, {:shutdown, :cancelled}}, 10_000
    Process.flag(:trap_exit, false)
  end

  test "Process.unlink round-trips; GenServer.stop returns :ok", %{info: i} do
    {:ok, pid} = start(i.node, %{spec: slow_spec()}, :start_link)
    assert Process.unlink(pid)
    # still alive and answering after the unlink
    assert {:ok, %{status: :running}} = GenServer.call(pid, :state)
    assert stats(i.node).links == 0
    assert GenServer.stop(pid, :normal, 30_000) == :ok
    refute Process.alive?(self()) == false
  end

  test "1000 calls from 8 concurrent callers to one run pid are all answered", %{info: i} do
    {:ok, pid} = start(i.node, %{spec: slow_spec()})
    results =
      1..8
      |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..125, do: GenServer.call(pid, :run_id) end) end)
      |> Enum.flat_map(&Task.await(&1, 60_000))
    assert length(results) == 1000
    assert Enum.uniq(results) |> length() == 1
    GenServer.call(pid, :cancel)
  end

  test "beam members are served by a member_server process; its crash is a member error", %{info: i} do
    # The server answers only after :go, so the run cannot end before the
    # monitor below is in place.
    server = gated_server()
    beam_spec = %{id: "b", members: [%{id: "elixir", provider: "beam", options: %{module: "Echo"}}],
                  rounds: [%{type: "independent_analysis"}]}
    {:ok, pid} = start(i.node, %{spec: beam_spec, member_server: server, subscribe: [self()]})
    ref = Process.monitor(pid)
    send(server, :go)
    evs = events()
    assert {:run_completed, _, %{final: "echo: What is 2+2? (Echo)"}} = List.last(evs)
    assert Enum.any?(evs, &match?({:member_token, _, _, "elixir", "echo"}, &1))
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000

    dying = spawn(fn -> receive do _ -> exit(:boom) end end)
    {:ok, _} = start(i.node, %{spec: Map.put(beam_spec, :limits, %{max_attempts: 1}),
                               member_server: dying, subscribe: [self()]})
    evs = events()
    assert {:run_failed, _, errors, _} = List.last(evs)
    assert Enum.any?(errors, &(&1 =~ "beam provider: member server down: boom"))
  end

  defp member_server do
    receive do
      {:council_member_call, run_pid, id, req} ->
        send(run_pid, {:council_member_token, id, "echo"})
        send(run_pid, {:council_member_reply, id,
                       {:ok, "echo: #{req["input"]} (#{req["options"]["module"]})"}})
        member_server()
    end
  end

  test "a peer that disconnects mid-run leaves no links, monitors or subscriptions", %{info: i} do
    base = stats(i.node)
    {peer, peer_node} = start_peer("peer", cookie())
    # The peer runs code of its own: a module compiled here, loaded there.
    [{mod, bin}] = Code.compile_string("""
      defmodule PeerClient do
        def go(target, spec, me) do
          spawn(fn ->
            {:ok, pid} = GenServer.call({:council_ex, target},
                                        {:start_link, %{spec: spec, input: "x", subscribe: [self()]}})
            _ = Process.monitor(pid)
            send(me, {:started, pid})
            Process.sleep(:infinity)
          end)
        end
      end
      """)
    {:module, ^mod} = :erpc.call(peer_node, :code, :load_binary, [mod, ~c"peer_client", bin])
    :erpc.call(peer_node, mod, :go, [i.node, slow_spec(), self()])
    assert_receive {:started, pid}, 15_000
    ref = Process.monitor(pid)
    s = stats(i.node)
    assert s.links == base.links + 1
    assert s.subscriptions == base.subscriptions + 1
    :peer.stop(peer)
    assert_receive {:DOWN, ^ref, :process, ^pid, :noconnection}, 15_000
    assert wait_until(fn ->
             s2 = stats(i.node)
             s2.links == base.links and s2.subscriptions == base.subscriptions and
               s2.monitors <= base.monitors + 1
           end)
  end

  test "results keep their documented shape: iterate rounds, no errors, exact keys", %{info: i} do
    spec = %{id: "it", members: [%{id: "a", provider: "mock"}, %{id: "b", provider: "mock"}],
             rounds: [%{type: "iterate", name: "loop",
                        options: %{max_iterations: 2,
                                   rounds: [%{type: "independent_analysis", name: "inner"}]}}]}
    {:ok, _pid} = start(i.node, %{spec: spec, subscribe: [self()]})
    evs = events()
    assert {:run_completed, _, %{final: final, rounds: rounds, errors: []} = result} = List.last(evs)
    assert Map.keys(result) |> Enum.sort() ==
             [:duration_us, :error_info, :errors, :final, :rounds, :usage]
    assert result.error_info == []
    assert is_integer(result.duration_us) and result.duration_us >= 0
    # mock members report no tokens
    zero = %{input_tokens: 0, output_tokens: 0, cost: nil}
    assert result.usage == zero
    assert is_binary(final)
    assert is_list(rounds) and length(rounds) == 3
    for r <- rounds do
      assert Map.keys(r) |> Enum.sort() ==
               [:aggregate, :duration_us, :idx, :members, :name, :text, :type, :usage]
      assert r.usage == zero
      assert is_list(r.members)
      for m <- r.members do
        assert Map.keys(m) |> Enum.sort() ==
                 [:attempts, :duration_us, :error, :error_kind, :member_id, :parsed,
                  :provider_us, :status, :text, :usage]
        assert %{error_kind: nil, usage: ^zero} = m
        assert is_integer(m.duration_us) and m.duration_us >= m.provider_us
      end
    end
    # the iterate round's own result: no members of its own
    assert %{name: "loop", members: [], type: "iterate"} = List.last(rounds)
    for {:round_completed, _, _, rr} <- evs, do: assert(is_list(rr.members))
  end
end
