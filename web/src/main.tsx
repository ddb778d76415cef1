import { render } from 'preact';
import './style.css';
import { App } from './app';
import { discussions, errorText, loadDiscussions, me, setChatHooks, start, toSignedOut } from './state';
import { applyLocalLanguage, startChat, stopChat } from './chat/store';
import { startNotify, stopNotify } from './notify/store';

applyLocalLanguage();
document.title = 'Veche';
setChatHooks({
  start: (user) => {
    startNotify(user);
    void startChat(
      {
        me: () => me.value,
        discussions: () => discussions.value,
        setDiscussions: (list) => (discussions.value = list),
        reloadDiscussions: loadDiscussions,
        signedOut: toSignedOut,
        errorText,
      },
      user,
    );
  },
  stop: () => {
    stopNotify();
    stopChat();
  },
});
const root = document.getElementById('app');
if (root) render(<App />, root);
void start();
