# Tools served by the BEAM (tool handler "beam", docs/protocol.md): a model
# member of the C node (provider openai, against the fake model server
# test/c/helpers/fake_llm) asks for its tools; a plain process of this
# BEAM node, the run's member server, gets {:council_tool_call, ...} and
# answers (or not) with {:council_tool_reply, ...}. Checks the message,
# the events, the answers the model gets, and every way the server can
# fail: an error reply, a malformed reply, a late or foreign one, no
# server, a server that dies, no answer before tool_timeout_ms.
Code.require_file("support.exs", __DIR__)

defmodule CNode.BeamToolsTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @fake Enum.find(
          [
            System.get_env("FAKE_LLM"),
            Path.join(Path.dirname(System.get_env("COUNCIL_NODE") || "priv/x"), "test/helpers/fake_llm"),
            "build/release/test/helpers/fake_llm",
            "build/asan/test/helpers/fake_llm"
          ],
          &(&1 && File.exists?(&1))
        )

  setup_all do
    if @fake == nil, do: raise("fake_llm is not built (make)")
    info = start_node()
    port = Port.open({:spawn_executable, @fake}, [:binary, {:line, 4096}, args: ["--port", "0"]])

    url =
      receive do
        {^port, {:data, {:eol, "fake_llm ready port=" <> n}}} -> "http://127.0.0.1:#{n}/v1"
      after
        30_000 -> raise "fake_llm did not start"
      end

    on_exit(fn -> stop_node(info) end)
    {:ok, info: info, url: url}
  end

  defp spec(url, extra \\ %{}) do
    tools = [%{name: "lookup", description: "Looks up", parameters: %{type: "object"}, handler: "beam"},
             %{name: "second", handler: "beam"}]
    %{id: "tools", rounds: [%{type: "independent_analysis"}],
      members: [%{id: "gpt", provider: "openai",
                  options: Map.merge(%{model: "tools~#{System.unique_integer([:positive])}",
                                       base_url: url, tools: tools}, extra)}]}
  end

  defp start(node, opts),
    do: GenServer.call({:council_ex, node}, {:start, Map.merge(%{input: "q"}, opts)})

  # Events up to the terminal one, tool events included.
  defp run_events(acc \\ []) do
    receive do
      {tag, _, _} = e when tag in [:run_completed, :run_cancelled] -> Enum.reverse([e | acc])
      {:run_failed, _, _, _} = e -> Enum.reverse([e | acc])
      e when is_tuple(e) and elem(e, 0) in [:run_started, :round_started, :member_started,
                                             :member_token, :member_completed, :round_completed,
                                             :tool_call_request, :tool_call_result] ->
        run_events([e | acc])
    after
      30_000 -> flunk("no terminal event; got #{inspect(Enum.reverse(acc), limit: 20)}")
    end
  end

  defp tool_results(evs),
    do: evs |> Enum.filter(&match?({:tool_call_result, _, _, _, _}, &1)) |> Enum.map(&elem(&1, 4))
            |> Enum.sort_by(& &1.name)

  # A member server that tells the test each call and answers with
  # answer.(name, arguments) (:none: no answer; {:raw, term}: that term).
  defp server(answer) do
    test = self()
    spawn(fn -> serve(test, answer) end)
  end

  defp serve(test, answer) do
    receive do
      {:council_tool_call, run, id, member, name, args} = msg ->
        send(test, {:tool_call_seen, msg})
        case answer.(name, args) do
          :none -> :ok
          :exit -> exit(:server_gone)
          {:raw, term} -> send(run, {:council_tool_reply, id, term})
          reply -> send(run, {:council_tool_reply, id, reply})
        end
        _ = member
        serve(test, answer)
    end
  end

  test "the member server's answers go to the model; the events show both sides", %{info: i, url: url} do
    srv = server(fn name, args -> {:ok, name <> " got " <> args} end)
    {:ok, run} = start(i.node, %{spec: spec(url), member_server: srv, subscribe: [self()]})
    evs = run_events()
    assert {:run_completed, _, %{final: final}} = List.last(evs)
    assert final == ~s(Tool results: lookup got {"query":"q1"} | second got {"query":"q2"})

    assert_received {:tool_call_seen, {:council_tool_call, ^run, id1, "gpt", "lookup", ~s({"query":"q1"})}}
    assert_received {:tool_call_seen, {:council_tool_call, ^run, id2, "gpt", "second", ~s({"query":"q2"})}}
    assert is_integer(id1) and is_integer(id2) and id1 != id2

    requests = for {:tool_call_request, _, "independent_analysis", "gpt", r} <- evs, do: r
    assert Enum.sort_by(requests, & &1.name) ==
             [%{id: "call_1", name: "lookup", arguments: ~s({"query":"q1"})},
              %{id: "call_2", name: "second", arguments: ~s({"query":"q2"})}]
    assert [%{name: "lookup", status: :ok, result: ~s(lookup got {"query":"q1"})},
            %{name: "second", status: :ok}] = tool_results(evs)
  end

  test "error replies, malformed ones, foreign and late ones", %{info: i, url: url} do
    srv = server(fn
      "lookup", _ -> {:error, "not found"}
      "second", _ -> {:raw, :garbage}
    end)
    {:ok, run} = start(i.node, %{spec: spec(url), member_server: srv, subscribe: [self()]})
    # a reply for an id nobody waits for, and one with a bad id, are dropped
    send(run, {:council_tool_reply, 987_654_321, {:ok, "stray"}})
    send(run, {:council_tool_reply, :bad_id, {:ok, "stray"}})
    evs = run_events()
    assert {:run_completed, _, %{final: final}} = List.last(evs)
    assert final =~ "not found"
    assert [%{name: "lookup", status: :error, result: "not found"},
            %{name: "second", status: :error,
              result: "beam tool: malformed reply from the member server"}] = tool_results(evs)
    refute final =~ "stray"
  end

  test "an {:error, term} reply is printed", %{info: i, url: url} do
    srv = server(fn _, _ -> {:error, {:badarg, 7}} end)
    {:ok, _} = start(i.node, %{spec: spec(url), member_server: srv, subscribe: [self()]})
    evs = run_events()
    assert [%{status: :error, result: "{badarg, 7}"}, %{status: :error}] = tool_results(evs)
  end

  test "no member server: every tool call is an error result, the member still answers",
       %{info: i, url: url} do
    {:ok, _} = start(i.node, %{spec: spec(url), subscribe: [self()]})
    evs = run_events()
    assert {:run_completed, _, %{final: "Tool results: " <> _}} = List.last(evs)
    for r <- tool_results(evs) do
      assert %{status: :error, result: "beam tool: this run has no member server" <> _} = r
    end
  end

  test "a member server that dies while calls wait: error results at once", %{info: i, url: url} do
    srv = server(fn
      "lookup", _ -> :none
      "second", _ -> :exit
    end)
    {:ok, _} = start(i.node, %{spec: spec(url, %{tool_timeout_ms: 60_000}), member_server: srv,
                               subscribe: [self()]})
    t0 = System.monotonic_time(:millisecond)
    evs = run_events()
    assert System.monotonic_time(:millisecond) - t0 < 30_000
    assert {:run_completed, _, _} = List.last(evs)
    results = tool_results(evs)
    assert length(results) == 2
    for r <- results do
      assert %{status: :error} = r
      assert r.result =~ "member server"
    end
    assert Enum.any?(results, &(&1.result == "beam tool: member server down: server_gone"))
  end

  test "no answer within tool_timeout_ms: an error result, a late reply is dropped",
       %{info: i, url: url} do
    srv = server(fn _, _ -> :none end)
    {:ok, run} = start(i.node, %{spec: spec(url, %{tool_timeout_ms: 300}), member_server: srv,
                                 subscribe: [self()]})
    ref = Process.monitor(run)
    evs = run_events()
    assert {:run_completed, _, _} = List.last(evs)
    assert [%{status: :error, result: "tool lookup timed out after 300 ms"},
            %{status: :error, result: "tool second timed out after 300 ms"}] = tool_results(evs)
    assert_received {:tool_call_seen, {:council_tool_call, ^run, id, _, _, _}}
    send(run, {:council_tool_reply, id, {:ok, "too late"}})
    assert_receive {:DOWN, ^ref, :process, ^run, :normal}
    assert wait_until(fn -> stats(i.node).runs_alive == 0 end)
  end

  test "cancelling a run with tool calls waiting", %{info: i, url: url} do
    srv = server(fn _, _ -> :none end)
    {:ok, run} = start(i.node, %{spec: spec(url), member_server: srv, subscribe: [self()]})
    assert_receive {:tool_call_seen, {:council_tool_call, ^run, id, _, _, _}}
    assert GenServer.call(run, :cancel) == :ok
    evs = run_events()
    assert {:run_cancelled, _, _} = List.last(evs)
    send(run, {:council_tool_reply, id, {:ok, "after the end"}})
    assert GenServer.call({:council_ex, i.node}, :ping) == :pong
  end
end
