# A council of real models through the Elixir library:
#
#   OPENAI_API_KEY=... mix run examples/llm_council.exs ["your question"]
#
# One member per provider whose key is in the environment (OPENAI_API_KEY,
# ANTHROPIC_API_KEY, GEMINI_API_KEY, OPENROUTER_API_KEY; OLLAMA_BASE_URL for
# a local Ollama), with the model from OPENAI_MODEL, ... and the API's URL
# from OPENAI_BASE_URL, ... when set. The members answer, review each other
# anonymously and vote; the first is the chair. Tokens stream as they come;
# then each member's usage and the final answer. The library starts the C
# node, which inherits this environment: the keys never leave it.

defmodule RealModels do
  @moduledoc false
  @presets [
    {:gpt, :openai, "OPENAI_API_KEY", "OPENAI_MODEL", "gpt-4o-mini", "OPENAI_BASE_URL"},
    {:claude, :anthropic, "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "claude-3-5-haiku-latest",
     "ANTHROPIC_BASE_URL"},
    {:gemini, :gemini, "GEMINI_API_KEY", "GEMINI_MODEL", "gemini-2.0-flash", "GEMINI_BASE_URL"},
    {:router, :openrouter, "OPENROUTER_API_KEY", "OPENROUTER_MODEL", "openai/gpt-4o-mini",
     "OPENROUTER_BASE_URL"},
    {:local, :ollama, "OLLAMA_BASE_URL", "OLLAMA_MODEL", "llama3.2", "OLLAMA_BASE_URL"}
  ]

  defp env(name), do: (v = System.get_env(name)) && v != "" && v

  @doc "The members whose provider is configured, as DSL options."
  def members do
    for {id, provider, key, model_env, model, base_env} <- @presets, env(key) do
      opts = [provider: provider, model: env(model_env) || model]
      opts = if base = env(base_env), do: Keyword.put(opts, :base_url, base), else: opts
      opts = if provider == :ollama, do: opts, else: Keyword.put(opts, :api_key, {:system, key})
      {id, opts}
    end
  end

  def variables, do: for({_, p, key, _, _, _} <- @presets, do: {key, p})
end

case RealModels.members() do
  [] ->
    IO.puts("No model provider is configured. Set one or more of:")
    for {var, p} <- RealModels.variables(), do: IO.puts("  #{var} (#{p})")
    IO.puts("`make demo` runs a council of mock members with no key.")

  members ->
    defmodule RealModels.Council do
      use CouncilEx
      for {id, opts} <- RealModels.members(), do: member(id, opts)
      round :independent_analysis, name: :answer
      if length(RealModels.members()) > 1 do
        round :anonymized_peer_review, name: :review
        round :vote
        chair elem(hd(RealModels.members()), 0)
      end

      limits member_timeout_ms: 120_000, max_attempts: 3, backoff_ms: 1_000
    end

    question = List.first(System.argv()) || "In two sentences: why is the sky blue?"
    IO.puts("council of #{length(members)} member(s); question: #{question}")
    {:ok, pid} = CouncilEx.start(RealModels.Council, question, subscribe: true)

    print = fn print, last ->
      receive do
        {:round_started, _, round, _} ->
          IO.puts("\n== round #{round}")
          print.(print, nil)

        {:member_token, _, _, member, chunk} ->
          if member != last, do: IO.write("\n  #{member}> ")
          IO.write(chunk)
          print.(print, member)

        {:tool_call_request, _, _, member, %{name: name, arguments: args}} ->
          IO.puts("\n  #{member} calls #{name}(#{args})")
          print.(print, nil)

        {:member_completed, _, _, member, %{status: :ok, usage: u}} ->
          IO.puts("\n  [#{member} done: #{u.input_tokens} in / #{u.output_tokens} out tokens]")
          print.(print, nil)

        {:member_completed, _, _, member, %{error: error, error_kind: kind}} ->
          IO.puts("\n  [#{member} #{kind} error: #{error}]")
          print.(print, nil)

        {:run_completed, _, %{final: final, usage: u}} ->
          IO.puts("\n== final answer\n#{final}\n\n== usage: #{u.input_tokens} in / #{u.output_tokens} out tokens")

        {:run_failed, _, errors, _} ->
          IO.puts("\n== run failed:")
          Enum.each(errors, &IO.puts("  #{&1}"))

        {:run_cancelled, _, _} ->
          IO.puts("\n== run cancelled")

        _ ->
          print.(print, last)
      end
    end

    print.(print, nil)
    CouncilEx.await(pid)
end
