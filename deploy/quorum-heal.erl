%% Restarts what RabbitMQ gave up on, on the node it is evaluated on, and returns what it
%% restarted ([] when the node is whole):
%%   rabbitmqctl -n NODE eval "<this file's text>"   (deploy/cluster.sh heal does so)
%% Keep dollar signs and backquotes out of it: Debian's rabbitmqctl passes its arguments
%% through sh -c.
%% Why: a queue with x-dead-letter-strategy at-least-once starts a dead-letter worker under
%% rabbit_fifo_dlx_sup wherever its leader moves. While leaders move (a node lost, a rolling
%% restart, a cluster starting), those workers crash on a leader that moved again; two crashes
%% in 5 s (RabbitMQ 3.10) stop the supervisor for good. From then on, each such queue whose
%% leader is elected on that node crashes its member there until Ra gives it up, and the
%% queue runs a member short (rabbitmq-server issues 16652 and 7677). Both are idle restarts:
%% a running supervisor or member is left alone.
Dlx = case whereis(rabbit_fifo_dlx_sup) of
          undefined ->
              _ = supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup),
              [rabbit_fifo_dlx_sup];
          _ -> []
      end,
Members = [begin
               _ = ra:restart_server(quorum_queues, {RaName, node()}),
               RaName
           end
           || Q <- rabbit_amqqueue:list_local_quorum_queues(),
              {RaName, _} <- [amqqueue:get_pid(Q)],
              whereis(RaName) =:= undefined],
Dlx ++ Members.
