%% @doc Erlang access to a CouncilEx C node: the raw calls of
%% docs/protocol.md, against the node's registered service
%% (`{council_ex, Node}' unless the node was started with
%% `--registered-name').
%%
%% The C node is `priv/council_node' (built by `make priv', which rebar3
%% runs before compiling this application; {@link executable/0} gives its
%% path). Start it yourself, e.g.
%% ```
%% priv/council_node --sname council --cookie-file ~/.erlang.cookie
%% '''
%% then, from a distributed Erlang node with the same cookie:
%% ```
%% Node = 'council@host',
%% Spec = <<"{\"id\":\"demo\",\"members\":[{\"id\":\"a\",\"provider\":\"mock\"},"
%%          "{\"id\":\"b\",\"provider\":\"mock\"}],"
%%          "\"rounds\":[{\"type\":\"independent_analysis\"},{\"type\":\"vote\"}]}">>,
%% {ok, Run} = council_ex_raw:start(Node, #{spec => Spec, input => <<"2+2?">>,
%%                                           run_id => <<"r1">>, subscribe => [self()]}),
%% {ok, #{final := Final}} = council_ex_raw:await(Run),
%% {ok, #{status := completed}} = council_ex_raw:state(Node, <<"r1">>).
%% '''
%% The subscribed process receives the events of docs/protocol.md
%% (`{run_started, RunId, Council, Input}' ... `{run_completed, RunId,
%% Result}'), with round names, member ids and texts as binaries.
%%
%% `Service' is the node name (the service is then `council_ex') or
%% `{RegisteredName, Node}'. Run ids, registries and topics are binaries
%% (strings are accepted and converted). Calls to the service wait 15 s by
%% default (`call/3' takes another timeout). A call that cannot be answered
%% returns `{error, Reason}' instead of exiting: `noconnection' (the node
%% is down or unreachable), `noproc' (no such process, e.g. a run that has
%% ended), `timeout'. A run id, registry or topic that is not text (a
%% binary, or a list of Unicode characters) gives `{error, {bad_text,
%% Term}}' without contacting the node.
%%
%% This module is a thin client of the protocol: the Elixir library
%% (`CouncilEx', built by Mix) adds node supervision, a per-node event
%% relay and spec validation on top of the same calls.
-module(council_ex_raw).

-export([start/2, start_link/2,
         whereis/2, whereis/3,
         state/2, state/3,
         result/2, result/3,
         cancel/2, cancel/3,
         subscribe/2, subscribe/3,
         unsubscribe/2, unsubscribe/3,
         await/1, await/2,
         run_call/2, run_call/3,
         ping/1, stats/1, validate/2,
         call/3,
         topic/1, default_registry/0, executable/0]).

-export_type([service/0, start_opts/0, run_id/0, summary/0, result/0, error/0]).

-define(SERVICE, council_ex).
-define(TIMEOUT, 15000).
%% The default registry and the topic prefix, as the core defines them,
%% and how a call's exit reads (include/council_schema.hrl is written by
%% `make` from the core's schema and the C node's reasons table: a header
%% rather than reading priv/schema.json at run time, as it needs no JSON
%% decoder and both rebar3 and Mix run `make priv' before compiling src/).
-include("council_schema.hrl").
-define(REGISTRY, ?COUNCIL_DEFAULT_REGISTRY).
-define(TOPIC_PREFIX, ?COUNCIL_TOPIC_PREFIX).

-type service() :: node() | {atom(), node()}.
%% A C node's service: the node (service `council_ex') or `{Name, Node}'.

-type run_id() :: binary() | string().

-type start_opts() :: #{spec := binary() | {json, binary()} | map() | list(),
                        input := term(),
                        run_id => binary() | undefined,
                        council => binary(),
                        registry => binary(),
                        user_opts => term(),
                        subscribe => [pid() | {pid(), tagged}],
                        member_server => pid()}.
%% The start options of docs/protocol.md: `spec' and `input' are required.

-type summary() :: #{run_id := binary(), council := binary(),
                     registry := binary(),
                     status := pending | running | completed | failed | cancelled,
                     current_round := nil | #{name := binary(),
                                              idx := non_neg_integer()},
                     rounds_completed := non_neg_integer(),
                     started_at := integer()}.
%% A run's state; `started_at' is in UTC microseconds since the epoch.

-type result() :: #{final := binary() | nil, rounds := [map()],
                    errors := [binary()]}.

-type error() :: {error, noconnection | noproc | timeout | term()}.

%% ------------------------------------------------------------------ service

%% @doc Starts a run, not linked to the caller: `{ok, RunPid}' or
%% `{error, Reason}' (`{already_started, RunPid}' with the pid of the
%% running run that has the run id, as `gen_server:start/3' gives it;
%% `run_id_retained' when the id is that of a run that has ended and is
%% still retained; `limit', `{invalid_spec, Field, Message}',
%% `{bad_option, Key}', ...).
-spec start(service(), start_opts()) -> {ok, pid()} | error().
start(Service, Opts) when is_map(Opts) ->
    call(Service, {start, Opts}, ?TIMEOUT).

%% @doc Like {@link start/2}, and links the run to the caller (the link
%% exists before the reply): the caller's exit cancels the run; a run that
%% fails or is cancelled exits with `{shutdown, _}', a completed one with
%% `normal'.
-spec start_link(service(), start_opts()) -> {ok, pid()} | error().
start_link(Service, Opts) when is_map(Opts) ->
    call(Service, {start_link, Opts}, ?TIMEOUT).

%% @equiv whereis(Service, default_registry(), RunId)
-spec whereis(service(), run_id()) ->
          {ok, pid()} | {error, unknown_run | runner_dead} | error().
whereis(Service, RunId) ->
    whereis(Service, ?REGISTRY, RunId).

%% @doc The pid of a running run: `{ok, Pid}'; `{error, unknown_run}' when
%% no running run has that id, also from the moment a run ends (its state
%% and result stay readable while it is retained); `{error, runner_dead}'
%% for a running run without a process (a stale entry).
-spec whereis(service(), binary() | string(), run_id()) ->
          {ok, pid()} | {error, unknown_run | runner_dead} | error().
whereis(Service, Registry, RunId) ->
    with_text(fun() -> call(Service, {whereis, bin(Registry), bin(RunId)}, ?TIMEOUT) end).

%% @equiv state(Service, default_registry(), RunId)
-spec state(service(), run_id()) -> {ok, summary()} | {error, not_found} | error().
state(Service, RunId) ->
    state(Service, ?REGISTRY, RunId).

%% @doc A run's state, also for a finished run within the retention window
%% (`--retention-ms', 5 minutes by default): `{ok, Summary}' or
%% `{error, not_found}'.
-spec state(service(), binary() | string(), run_id()) ->
          {ok, summary()} | {error, not_found} | error().
state(Service, Registry, RunId) ->
    with_text(fun() -> call(Service, {state, bin(Registry), bin(RunId)}, ?TIMEOUT) end).

%% @equiv result(Service, default_registry(), RunId)
-spec result(service(), run_id()) ->
          {ok, result()} | {error, term()}.
result(Service, RunId) ->
    result(Service, ?REGISTRY, RunId).

%% @doc A run's outcome by id, never blocking: `{ok, Result}',
%% `{error, {failed, Errors, Result}}', `{error, {cancelled, Result}}',
%% `{error, running}', or `{error, not_found}' (unknown, or retention
%% passed).
-spec result(service(), binary() | string(), run_id()) ->
          {ok, result()} | {error, term()}.
result(Service, Registry, RunId) ->
    with_text(fun() -> call(Service, {result, bin(Registry), bin(RunId)}, ?TIMEOUT) end).

%% @equiv cancel(Service, default_registry(), RunId)
-spec cancel(service(), run_id()) -> ok | {error, not_found} | error().
cancel(Service, RunId) ->
    cancel(Service, ?REGISTRY, RunId).

%% @doc Cancels a run by id: `ok' (also for a run that has ended already)
%% or `{error, not_found}'.
-spec cancel(service(), binary() | string(), run_id()) ->
          ok | {error, not_found} | error().
cancel(Service, Registry, RunId) ->
    with_text(fun() -> call(Service, {cancel, bin(Registry), bin(RunId)}, ?TIMEOUT) end).

%% @equiv subscribe(Service, RunIdOrTopic, self())
-spec subscribe(service(), run_id()) -> ok | {error, limit} | error().
subscribe(Service, RunIdOrTopic) ->
    subscribe(Service, RunIdOrTopic, self()).

%% @doc Subscribes `Pid' to a topic (a run id is turned into its topic, see
%% {@link topic/1}): it receives every later event of that run, as plain
%% messages. A run's own topic ends after its terminal event; a topic may
%% be subscribed before its run exists. To miss no event, pass
%% `subscribe => [Pid]' to {@link start/2} instead.
-spec subscribe(service(), run_id(), pid()) -> ok | {error, limit} | error().
subscribe(Service, RunIdOrTopic, Pid) when is_pid(Pid) ->
    with_text(fun() -> call(Service, {subscribe, topic_of(RunIdOrTopic), Pid}, ?TIMEOUT) end).

%% @equiv unsubscribe(Service, RunIdOrTopic, self())
-spec unsubscribe(service(), run_id()) -> ok | error().
unsubscribe(Service, RunIdOrTopic) ->
    unsubscribe(Service, RunIdOrTopic, self()).

%% @doc Ends `Pid''s subscription to a topic (or run id). Always `ok' when
%% the node answers.
-spec unsubscribe(service(), run_id(), pid()) -> ok | error().
unsubscribe(Service, RunIdOrTopic, Pid) when is_pid(Pid) ->
    with_text(fun() -> call(Service, {unsubscribe, topic_of(RunIdOrTopic), Pid}, ?TIMEOUT) end).

%% @doc `pong' when the service answers.
-spec ping(service()) -> pong | error().
ping(Service) ->
    call(Service, ping, ?TIMEOUT).

%% @doc The node's counts: `{ok, #{connections, processes, links, monitors,
%% runs, runs_alive, subscriptions}}'.
-spec stats(service()) -> {ok, #{atom() => non_neg_integer()}} | error().
stats(Service) ->
    call(Service, stats, ?TIMEOUT).

%% @doc What a start with `Spec' (as the `spec' of {@link start/2}) would
%% answer for the spec, nothing started: `ok' or `{error, {invalid_spec,
%% Field, Message}}'.
-spec validate(service(), term()) -> ok | error().
validate(Service, Spec) ->
    call(Service, {validate, Spec}, ?TIMEOUT).

%% @doc Any request of docs/protocol.md to the service, with a timeout.
%% Returns the reply, or `{error, Reason}' when there is none (see the
%% module documentation).
-spec call(service(), term(), timeout()) -> term().
call(Service, Request, Timeout) ->
    safe_call(service(Service), Request, Timeout).

%% ----------------------------------------------------------------- run pids

%% @equiv await(Run, infinity)
-spec await(pid()) -> {ok, result()} | {error, term()}.
await(Run) ->
    await(Run, infinity).

%% @doc Waits for a run to end: `{ok, Result}',
%% `{error, {failed, Errors, Result}}', `{error, {cancelled, Result}}'.
%% A run that has ended already, or ends while the call waits without
%% answering it (whatever its exit reason: `normal', `{shutdown, _}', a
%% `gen_server:stop/2' reason, a linked caller's reason such as `killed'),
%% is no process any more: its outcome is then asked of the node's
%% `council_ex' service by pid (`{outcome_by_pid, Run}'), which has it for
%% as long as the node retains the run (`--retention-ms'), so the answer is
%% the same as for a run that was still going. `{error, noproc}' once the
%% run has left retention (read nothing more by id either), or when the
%% node's service has another registered name. `{error, noconnection}'
%% when the node is lost, `{error, timeout}'.
-spec await(pid(), timeout()) -> {ok, result()} | {error, term()}.
await(Run, Timeout) when is_pid(Run) ->
    ended_outcome(Run, run_safe_call(Run, await, Timeout)).

%% @equiv run_call(Run, Request, 15000)
-spec run_call(pid(), term()) -> term().
run_call(Run, Request) ->
    run_call(Run, Request, ?TIMEOUT).

%% @doc A call on a run pid: `run_id', `state', `cancel', `await',
%% `result', `{subscribe, Pid}', `{unsubscribe, Pid}'. Returns the reply,
%% or `{error, Reason}' when there is none: `noproc' for a run that has
%% ended (whatever its exit reason, see {@link await/2}; `await' answers
%% with the ended run's outcome as {@link await/2} does), `noconnection',
%% `timeout'.
-spec run_call(pid(), term(), timeout()) -> term().
run_call(Run, await, Timeout) when is_pid(Run) ->
    await(Run, Timeout);
run_call(Run, Request, Timeout) when is_pid(Run) ->
    run_safe_call(Run, Request, Timeout).

%% ------------------------------------------------------------------ helpers

%% @doc The topic of a run id: `<<"council_ex:run:", RunId/binary>>'; a
%% topic (a sub-council's too) is returned as it is.
%% A run id that is not text (a binary, or a list of Unicode characters)
%% raises `error({bad_text, RunIdOrTopic})'.
-spec topic(run_id()) -> binary().
topic(RunIdOrTopic) ->
    try topic_of(RunIdOrTopic)
    catch throw:{bad_text, _} = Bad -> erlang:error(Bad, [RunIdOrTopic])
    end.

topic_of(RunIdOrTopic) ->
    case bin(RunIdOrTopic) of
        <<?TOPIC_PREFIX, _/binary>> = Topic -> Topic;
        RunId -> <<?TOPIC_PREFIX, RunId/binary>>
    end.

%% @doc The registry that calls without one use, and that the Elixir
%% library uses by default: `<<"CouncilEx.Runner.Registry">>'.
-spec default_registry() -> binary().
default_registry() ->
    ?REGISTRY.

%% @doc The path of the C node program of this application
%% (`priv/council_node').
-spec executable() -> file:filename().
executable() ->
    case code:priv_dir(council_ex) of
        {error, _} -> filename:absname("priv/council_node");
        Priv -> filename:join(Priv, "council_node")
    end.

service({Name, Node} = S) when is_atom(Name), is_atom(Node) -> S;
service(Node) when is_atom(Node) -> {?SERVICE, Node}.

safe_call(Dest, Request, Timeout) ->
    try
        gen_server:call(Dest, Request, Timeout)
    catch
        exit:{Reason, {gen_server, call, _}} -> {error, exit_reason(Reason)}
    end.

%% A call to a run pid: the run's exit, whatever its reason, is its end
%% (noproc); only a lost node and the timeout are errors of their own.
run_safe_call(Run, Request, Timeout) ->
    try
        gen_server:call(Run, Request, Timeout)
    catch
        exit:{Reason, {gen_server, call, _}} -> {error, run_exit_reason(Reason)}
    end.

%% An await that met the run's end (noproc): the outcome the node retains
%% for the pid, or noproc when it has none.
ended_outcome(Run, {error, noproc}) ->
    case safe_call({?SERVICE, node(Run)}, {outcome_by_pid, Run}, ?TIMEOUT) of
        {ok, _} = Completed -> Completed;
        {error, {failed, _, _}} = Failed -> Failed;
        {error, {cancelled, _}} = Cancelled -> Cancelled;
        _NotRetained -> {error, noproc}
    end;
ended_outcome(_Run, Reply) ->
    Reply.

run_exit_reason(Reason) ->
    case exit_reason(Reason) of
        noconnection -> noconnection;
        timeout -> timeout;
        _Ended -> noproc
    end.

%% What the exit of a call reads as (normal: noproc, {nodedown, _}:
%% noconnection; c_src/cnode/reasons.c, through include/council_schema.hrl).
exit_reason(Reason) -> ?COUNCIL_CALL_EXIT(Reason).

%% Text (a binary, or a list of Unicode characters: chardata) as a
%% binary; anything else throws {bad_text, Term}, which with_text/1 turns
%% into the caller's `{error, {bad_text, Term}}'.
bin(B) when is_binary(B) -> B;
bin(L) when is_list(L) ->
    try unicode:characters_to_binary(L) of
        B when is_binary(B) -> B;
        _ -> throw({bad_text, L})
    catch error:_ -> throw({bad_text, L})
    end;
bin(Other) -> throw({bad_text, Other}).

with_text(Fun) ->
    try Fun()
    catch throw:{bad_text, _} = Bad -> {error, Bad}
    end.
