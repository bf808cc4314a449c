defmodule CouncilEx.ErlangRawTest do
  # src/council_ex_raw.erl, the Erlang module that rebar3 builds for Erlang
  # projects (Mix compiles it too), against the library-managed C node; and,
  # where rebar3 is installed, a throwaway rebar3 project that depends on
  # this repository through _checkouts/ and calls it from a plain Erlang VM.
  use ExUnit.Case, async: false
  @moduletag :cnode
  # the C node itself (its process, distribution, the relay)
  @moduletag :cnode_only

  import CouncilEx.Test.Helpers

  @spec_json ~s({"id":"erl","members":[{"id":"a","provider":"mock","options":{"latency_ms":200}},) <>
               ~s({"id":"b","provider":"mock"}],"rounds":[{"type":"independent_analysis"},{"type":"vote"}]})

  @root Path.expand("../..", __DIR__)

  defp start_opts(id, extra \\ %{}),
    do: Map.merge(%{spec: @spec_json, input: "2+2?", run_id: id}, extra)

  # @spec_json with member "a" served by a member server of the test (the
  # raw protocol's beam provider): with `gated_server/0` the run stays
  # running until the test sends :go, however slow the machine (a 200 ms
  # latency only made that likely).
  @gated_json String.replace(
                @spec_json,
                ~s("provider":"mock","options":{"latency_ms":200}),
                ~s("provider":"beam","options":{"module":"Gate"})
              )

  defp gated_server do
    spawn(fn ->
      receive do
        :go -> serve_member()
      end
    end)
  end

  defp serve_member do
    receive do
      {:council_member_call, run, call_id, _request} ->
        send(run, {:council_member_reply, call_id, {:ok, "a: 4"}})
        serve_member()
    end
  end

  test "start, await, state, result, whereis, cancel by id; events to a subscribed Erlang pid" do
    node = CouncilEx.node()
    id = run_id("erl")
    assert :council_ex_raw.ping(node) == :pong
    assert :council_ex_raw.ping({:council_ex, node}) == :pong

    server = gated_server()

    assert {:ok, run} =
             :council_ex_raw.start(
               node,
               start_opts(id, %{spec: @gated_json, member_server: server, subscribe: [self()]})
             )

    assert node(run) == node
    assert {:ok, ^run} = :council_ex_raw.whereis(node, id)
    # the same run through the Elixir API (same default registry)
    assert {:ok, ^run} = CouncilEx.RunServer.whereis(id)
    assert :council_ex_raw.run_call(run, :run_id) == id
    assert {:ok, %{status: :running, run_id: ^id}} = :council_ex_raw.state(node, id)

    send(server, :go)
    assert {:ok, %{final: final} = result} = :council_ex_raw.await(run)
    assert is_binary(final)
    # plain (untagged) events with binaries, in order
    assert_receive {:run_started, ^id, "erl", "2+2?"}, 15_000
    assert_receive {:round_started, ^id, "independent_analysis", 0}, 15_000
    assert_receive {:run_completed, ^id, ^result}, 15_000

    # an ended run: its pid is gone, its outcome stays readable by id, and
    # await answers it from the node's retention (by pid)
    assert :council_ex_raw.await(run, 5_000) == {:ok, result}
    assert :council_ex_raw.run_call(run, :await) == {:ok, result}
    assert :council_ex_raw.run_call(run, :state) == {:error, :noproc}
    assert {:ok, ^result} = :council_ex_raw.result(node, id)
    assert {:ok, ^result} = :council_ex_raw.result(node, String.to_charlist(id))
    assert {:ok, %{status: :completed}} = :council_ex_raw.state(node, id)
    assert {:error, :unknown_run} = :council_ex_raw.whereis(node, id)
    assert :council_ex_raw.cancel(node, id) == :ok
    assert {:error, :not_found} = :council_ex_raw.cancel(node, "no-such-run")
    assert {:error, :not_found} = :council_ex_raw.state(node, "no-such-run")
    assert {:error, :unknown_run} = :council_ex_raw.whereis(node, "no-such-run")

    # registries are namespaces
    assert {:error, :not_found} = :council_ex_raw.state(node, "OtherRegistry", id)
    assert :council_ex_raw.default_registry() == "CouncilEx.Runner.Registry"
  end

  test "start_link links; cancel by pid; subscribe and unsubscribe by run id or topic" do
    Process.flag(:trap_exit, true)
    node = CouncilEx.node()
    id = run_id("erl-link")
    assert :council_ex_raw.topic(id) == "council_ex:run:" <> id
    assert :council_ex_raw.topic("council_ex:run:" <> id) == "council_ex:run:" <> id

    # subscribed before the run exists
    assert :council_ex_raw.subscribe(node, id) == :ok
    slow = String.replace(@spec_json, ~s("latency_ms":200), ~s("latency_ms":600000))
    assert {:ok, run} = :council_ex_raw.start_link(node, %{start_opts(id) | spec: slow})
    assert {:links, links} = Process.info(self(), :links)
    assert run in links
    assert_receive {:run_started, ^id, _, _}, 15_000

    assert :council_ex_raw.run_call(run, :cancel) == :ok
    assert_receive {:run_cancelled, ^id, %{}}, 15_000
    assert_receive {:EXIT, ^run, {:shutdown, :cancelled}}, 15_000
    assert {:error, {:cancelled, %{}}} = :council_ex_raw.result(node, id)

    topic = "council_ex:run:" <> run_id("erl-topic")
    assert :council_ex_raw.subscribe(node, topic, self()) == :ok
    assert :council_ex_raw.unsubscribe(node, topic) == :ok
    assert :council_ex_raw.unsubscribe(node, topic, self()) == :ok
    assert {:ok, %{runs: runs, subscriptions: _}} = :council_ex_raw.stats(node)
    assert is_integer(runs)
  end

  test "errors are values: invalid spec, bad option, a node that is not there" do
    node = CouncilEx.node()

    assert {:error, {:invalid_spec, "rounds", _}} =
             :council_ex_raw.start(node, %{
               spec: ~s({"id":"x","members":[{"id":"a","provider":"mock"}]}),
               input: 1
             })

    assert {:error, {:bad_option, _}} = :council_ex_raw.start(node, %{spec: @spec_json})
    assert :ok = :council_ex_raw.validate(node, @spec_json)

    assert {:error, {:invalid_spec, "rounds", _}} =
             :council_ex_raw.validate(node, ~s({"id":"x","members":[{"id":"a","provider":"mock"}]}))

    assert {:error, {:unknown_call, :bogus}} = :council_ex_raw.call(node, :bogus, 5_000)

    {:ok, host} = :inet.gethostname()
    nobody = :"council_ex_raw_nobody@#{host}"
    assert :council_ex_raw.ping(nobody) == {:error, :noconnection}
    assert :council_ex_raw.state(nobody, "x") == {:error, :noconnection}
    assert :council_ex_raw.ping({:not_the_service, node}) == {:error, :noproc}
  end

  test "executable/0 is the C node of this application's priv/" do
    exe = :council_ex_raw.executable()
    assert Path.basename(exe) == "council_node"
    assert File.regular?(exe)
    assert File.regular?(Path.join(@root, "priv/council_node"))
  end

  describe "a rebar3 project depending on this repository" do
    if System.find_executable("rebar3") == nil do
      @tag skip: "rebar3 is not installed (apt-get install rebar3)"
    end

    @tag timeout: 300_000
    test "builds it through _checkouts/ and calls council_ex_raw from a plain Erlang VM" do
      dir = Path.join(System.tmp_dir!(), "council_ex_rebar3_#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm_rf!(dir) end)
      File.mkdir_p!(Path.join(dir, "src"))
      File.mkdir_p!(Path.join(dir, "_checkouts"))
      File.ln_s!(@root, Path.join(dir, "_checkouts/council_ex"))

      File.write!(
        Path.join(dir, "rebar.config"),
        "{erl_opts, [debug_info]}.\n{deps, [council_ex]}.\n"
      )

      File.write!(Path.join(dir, "src/erl_user.app.src"), """
      {application, erl_user, [{description, "uses council_ex"}, {vsn, "0.1.0"},
        {applications, [kernel, stdlib, council_ex]}, {modules, []},
        {registered, []}, {env, []}]}.
      """)

      File.write!(Path.join(dir, "src/erl_user.erl"), ~S"""
      -module(erl_user).
      -export([main/1]).
      main(Node) ->
          ok = application:start(council_ex),
          pong = council_ex_raw:ping(Node),
          Spec = <<"{\"id\":\"e\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\"}],"
                   "\"rounds\":[{\"type\":\"independent_analysis\"}]}">>,
          Id = iolist_to_binary(["rebar3-user-", integer_to_list(erlang:system_time())]),
          {ok, _Run} = council_ex_raw:start(Node, #{spec => Spec, input => <<"q">>,
                                                    run_id => Id, subscribe => [self()]}),
          receive {run_completed, Id, #{final := Final}} -> ok after 30000 -> Final = timeout end,
          {ok, #{status := completed}} = council_ex_raw:state(Node, Id),
          true = filelib:is_regular(council_ex_raw:executable()),
          io:format("erl_user: ~s~n", [Final]).
      """)

      {out, status} = System.cmd("rebar3", ["compile"], cd: dir, stderr_to_stdout: true)

      assert status == 0, out
      ebin = Path.join(dir, "_build/default/checkouts/council_ex/ebin")
      assert File.regular?(Path.join(ebin, "council_ex_raw.beam")), out
      assert File.read!(Path.join(ebin, "council_ex.app")) =~ "council_ex_raw"

      # A plain Erlang VM with this VM's cookie (from a 0400 file, not argv).
      home = Path.join(dir, "home")
      File.mkdir_p!(home)
      cookie = Path.join(home, ".erlang.cookie")
      File.write!(cookie, Atom.to_string(Node.get_cookie()))
      File.chmod!(cookie, 0o400)
      node = CouncilEx.node()

      {out, status} =
        System.cmd(
          "erl",
          [
            "-noshell",
            "-sname",
            "erl_user_#{System.unique_integer([:positive])}",
            "-pa",
            ebin,
            "-pa",
            Path.join(dir, "_build/default/lib/erl_user/ebin"),
            "-eval",
            "erl_user:main('#{node}'), halt()."
          ],
          cd: dir,
          stderr_to_stdout: true,
          env: [{"HOME", home}]
        )

      assert status == 0, out
      assert out =~ ~r/erl_user: a: independent_analysis #0 attempt 1/, out
    end
  end
end
