defmodule CouncilEx.Member do
  @moduledoc """
  Behaviour of a council member written in Elixir (provider `beam`).

  The C node sends each member call to the library, which runs `call/2` in a
  task: `request` is the JSON object the `exec` provider would get on stdin
  (binary keys: the input, the round, what the round type shows the member),
  `request["user_opts"]` is the run's `:user_opts` term as given to
  `CouncilEx.start/3` (or `nil`): the place for per-run settings such as a
  model name. `emit` streams chunks of the answer as `:member_token` events. Return the
  full text, or `{:error, reason}`; a raise or exit becomes a member error
  with its message. Timeouts and retries are the C node's (the spec's
  `limits`).

      defmodule MyApp.EchoMember do
        @behaviour CouncilEx.Member

        @impl true
        def call(request, emit) do
          text = "echo: " <> inspect(request["input"])
          emit.(text)
          {:ok, text}
        end
      end

      defmodule MyApp.Council do
        use CouncilEx
        member :echo, provider: MyApp.EchoMember
        round :independent_analysis
      end
  """

  @doc "Answers one member call; `emit` sends a streamed chunk."
  @callback call(request :: map, emit :: (binary -> :ok)) :: {:ok, binary} | {:error, term}
end
